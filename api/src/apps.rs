//! `/v1/apps` and `/v1/keys`: tenants and the API keys that act for them.

use actix_web::{web, HttpResponse};
use bida_actors::access::{
    AppPatch, AppView, CreatedApp, IssuedKey, KeyRequest, KeyView, RotateRequest, RotatedSecret,
};
use bida_domain::access::{App, AppSpec};
use serde::Serialize;
use utoipa::ToSchema;

use crate::json::{JsonBody, QueryParams};
use crate::paging::{page, PageQuery};
use crate::problem::Problem;
use crate::{history, ApiState};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/apps")
                .route(web::post().to(create))
                .route(web::get().to(list)),
        )
        .service(
            web::resource("/v1/apps/{id}")
                .route(web::get().to(view))
                .route(web::patch().to(update))
                .route(web::delete().to(delete)),
        )
        .service(web::resource("/v1/apps/{id}/events").route(web::get().to(events)))
        .service(web::resource("/v1/apps/{id}/secret/rotate").route(web::post().to(rotate_secret)))
        .service(
            web::resource("/v1/apps/{id}/keys")
                .route(web::post().to(issue))
                .route(web::get().to(keys)),
        )
        .service(web::resource("/v1/apps/{id}/keys/{key_id}").route(web::delete().to(revoke)))
        .service(
            web::resource("/v1/keys")
                .route(web::post().to(issue_installation_key))
                .route(web::get().to(installation_keys)),
        )
        .service(web::resource("/v1/keys/{key_id}").route(web::delete().to(revoke_installation_key)));
}

#[derive(Serialize, ToSchema)]
pub struct AppList {
    pub items: Vec<AppView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Create an app: a system that submits tasks with its own keys. The answer
/// holds the app's signing secret, shown only now.
#[utoipa::path(post, path = "/v1/apps", tag = "apps", request_body = AppSpec,
    responses((status = 201, body = CreatedApp),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn create(state: web::Data<ApiState>, body: JsonBody<AppSpec>) -> Result<HttpResponse, Problem> {
    let created = state.access.create_app(body.0).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/v1/apps/{}", created.app.id)))
        .json(created))
}

/// Every app.
#[utoipa::path(get, path = "/v1/apps", tag = "apps", params(PageQuery), responses((status = 200, body = AppList)))]
pub async fn list(state: web::Data<ApiState>, query: QueryParams<PageQuery>) -> Result<HttpResponse, Problem> {
    let page = page(
        state.access.apps().await?,
        |a| a.id.clone(),
        &query.0,
        state.config.max_page,
    )?;
    Ok(HttpResponse::Ok().json(AppList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// An app.
#[utoipa::path(get, path = "/v1/apps/{id}", tag = "apps", params(("id" = String, Path)),
    responses((status = 200, body = AppView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn view(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(state.access.app(&id).await?))
}

/// Rename an app or change the networks its keys work from (at once, on every node).
#[utoipa::path(patch, path = "/v1/apps/{id}", tag = "apps", params(("id" = String, Path)), request_body = AppPatch,
    responses((status = 200, body = AppView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: JsonBody<AppPatch>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(state.access.update_app(&id, body.0).await?))
}

/// Delete an app: its keys stop working at once; its tasks stay.
#[utoipa::path(delete, path = "/v1/apps/{id}", tag = "apps", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Already deleted", body = Problem, content_type = "application/problem+json")))]
pub async fn delete(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    state.access.delete_app(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The app's history: who changed what, when.
#[utoipa::path(get, path = "/v1/apps/{id}/events", tag = "apps", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = history::EventHistory), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn events(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    query: QueryParams<PageQuery>,
) -> Result<HttpResponse, Problem> {
    // A deleted app is a 404 here; its history stays at /v1/audit/apps/{id}.
    state.access.app(&id).await?;
    history::of::<App>(&state, &id, &query.0, "app").await
}

/// A new key of the app. The key is in this answer only: keep it.
#[utoipa::path(post, path = "/v1/apps/{id}/keys", tag = "apps", params(("id" = String, Path)), request_body = KeyRequest,
    responses((status = 201, body = IssuedKey), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn issue(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: JsonBody<KeyRequest>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Created().json(state.access.issue(Some(&id), body.0).await?))
}

/// The app's keys (prefix, role, last use; never the key).
#[utoipa::path(get, path = "/v1/apps/{id}/keys", tag = "apps", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = KeyList), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn keys(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    query: QueryParams<PageQuery>,
) -> Result<HttpResponse, Problem> {
    key_page(&state, state.access.keys(Some(&id)).await?, &query.0)
}

fn key_page(state: &ApiState, keys: Vec<KeyView>, query: &PageQuery) -> Result<HttpResponse, Problem> {
    let page = page(keys, |k| k.id.clone(), query, state.config.max_page)?;
    Ok(HttpResponse::Ok().json(KeyList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Revoke one of the app's keys, on every node at once.
#[utoipa::path(delete, path = "/v1/apps/{id}/keys/{key_id}", tag = "apps",
    params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Already revoked", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke(state: web::Data<ApiState>, path: web::Path<(String, String)>) -> Result<HttpResponse, Problem> {
    let (app_id, key_id) = path.into_inner();
    state.access.revoke(Some(&app_id), &key_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new installation-wide key (an admin, operator or viewer of everything).
#[utoipa::path(post, path = "/v1/keys", tag = "apps", request_body = KeyRequest,
    responses((status = 201, body = IssuedKey), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn issue_installation_key(
    state: web::Data<ApiState>,
    body: JsonBody<KeyRequest>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Created().json(state.access.issue(None, body.0).await?))
}

/// The installation-wide keys.
#[utoipa::path(get, path = "/v1/keys", tag = "apps", params(PageQuery), responses((status = 200, body = KeyList)))]
pub async fn installation_keys(
    state: web::Data<ApiState>,
    query: QueryParams<PageQuery>,
) -> Result<HttpResponse, Problem> {
    key_page(&state, state.access.keys(None).await?, &query.0)
}

/// Revoke an installation-wide key, on every node at once.
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "apps", params(("key_id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Already revoked", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_installation_key(
    state: web::Data<ApiState>,
    key_id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    state.access.revoke(None, &key_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new signing secret for the app's deliveries; the current one keeps
/// signing beside it (both signatures are sent) for the overlap.
#[utoipa::path(post, path = "/v1/apps/{id}/secret/rotate", tag = "apps", params(("id" = String, Path)),
    request_body(content = Option<RotateRequest>, description = "Optional"),
    responses((status = 200, body = RotatedSecret), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "No secret_key configured", body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn rotate_secret(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: JsonBody<Option<RotateRequest>>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(state.access.rotate_secret(&id, body.0.unwrap_or_default()).await?))
}
