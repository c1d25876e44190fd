//! `/v1/descriptors`: protobuf descriptor sets for gRPC deliveries to
//! servers that do not answer reflection. A set is the bytes `protoc
//! --descriptor_set_out=orders.pb --include_imports orders.proto` writes.

use actix_web::{web, HttpResponse};
use bida_actors::delivery::{DescriptorSetView, MAX_SET_BYTES};
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::ApiState;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/descriptors")
                .app_data(web::PayloadConfig::new(MAX_SET_BYTES + 1))
                .route(web::post().to(upload))
                .route(web::get().to(list)),
        )
        .service(
            web::resource("/v1/descriptors/{id}")
                .route(web::get().to(view))
                .route(web::delete().to(delete)),
        );
}

#[derive(Serialize, ToSchema)]
pub struct DescriptorSetList {
    pub items: Vec<DescriptorSetView>,
}

/// Upload a `FileDescriptorSet` (binary, with the files it imports) for
/// every node: gRPC deliveries to the services it describes take their
/// message types from it. The same bytes uploaded again answer 200 with
/// the set on record.
#[utoipa::path(post, path = "/v1/descriptors", tag = "descriptors",
    request_body(content = String, content_type = "application/octet-stream", description = "An encoded google.protobuf.FileDescriptorSet"),
    responses(
        (status = 201, body = DescriptorSetView),
        (status = 200, description = "Uploaded before", body = DescriptorSetView),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn upload(state: web::Data<ApiState>, body: web::Bytes) -> Result<HttpResponse, Problem> {
    let (view, new) = state.descriptors.upload(&body).await?;
    let mut response = match new {
        true => HttpResponse::Created(),
        false => HttpResponse::Ok(),
    };
    Ok(response
        .insert_header(("location", format!("/v1/descriptors/{}", view.id)))
        .json(view))
}

#[utoipa::path(get, path = "/v1/descriptors", tag = "descriptors", responses((status = 200, body = DescriptorSetList)))]
pub async fn list(state: web::Data<ApiState>) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(DescriptorSetList {
        items: state.descriptors.list().await?,
    }))
}

#[utoipa::path(get, path = "/v1/descriptors/{id}", tag = "descriptors", params(("id" = String, Path)),
    responses((status = 200, body = DescriptorSetView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn view(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json(state.descriptors.view(&id).await?))
}

/// Delete a set: deliveries that need it fall back to the server's
/// reflection (on every node within a minute).
#[utoipa::path(delete, path = "/v1/descriptors/{id}", tag = "descriptors", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete(state: web::Data<ApiState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    state.descriptors.delete(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}
