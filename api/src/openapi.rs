use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::problem::PROBLEM_JSON;
use crate::{apps, brokers, consumers, health, monitoring, problem, tasks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bida",
        description = "Bida (必达) callback center: submit callback tasks and follow their delivery.",
    ),
    paths(
        tasks::submit,
        tasks::list,
        tasks::detail,
        tasks::events,
        tasks::retry,
        tasks::cancel,
        tasks::replay,
        tasks::replay_one,
        brokers::register,
        brokers::list,
        brokers::view,
        brokers::update,
        brokers::delete,
        brokers::events,
        brokers::offline,
        brokers::online,
        consumers::create,
        consumers::list,
        consumers::view,
        consumers::patch,
        consumers::delete,
        consumers::events,
        consumers::lifecycle,
        consumers::reset_offsets,
        consumers::resend,
        consumers::replay_lane,
        apps::create,
        apps::list,
        apps::view,
        apps::update,
        apps::delete,
        apps::events,
        apps::rotate_secret,
        apps::issue,
        apps::keys,
        apps::revoke,
        apps::issue_installation_key,
        apps::installation_keys,
        apps::revoke_installation_key,
        monitoring::series,
        monitoring::overview,
        monitoring::nodes,
        monitoring::metrics,
        health::healthz,
        health::readyz,
        document,
    ),
    modifiers(&BearerKeys),
    components(schemas(problem::Problem)),
    tags(
        (name = "tasks", description = "Callback tasks"),
        (name = "brokers", description = "MQ clusters consumers read from"),
        (name = "consumers", description = "Broker sources bound to endpoints"),
        (name = "apps", description = "Apps and their API keys (admin)"),
        (name = "monitoring", description = "Statistics, nodes and metrics"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

/// Every `/v1` route takes `Authorization: Bearer <key>`; the probes and,
/// unless configured otherwise, `/metrics` and this document are open.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("bida_…")
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let reads = [&mut item.get].map(|operation| (false, operation));
            let changes =
                [&mut item.post, &mut item.patch, &mut item.put, &mut item.delete].map(|operation| (true, operation));
            for (changes, operation) in reads
                .into_iter()
                .chain(changes)
                .filter_map(|(changes, operation)| operation.as_mut().map(|o| (changes, o)))
            {
                operation.security = Some(vec![SecurityRequirement::new("api_key", Vec::<String>::new())]);
                let mut common = vec![
                    ("400", "Malformed: a path, query or body Bida cannot read"),
                    ("401", "No key, or not a valid one"),
                    ("403", "The key's role or network does not allow it"),
                    ("429", "The key is over its rate (Retry-After says when to come back)"),
                    ("503", "The event store is unavailable"),
                ];
                if path.contains('{') {
                    common.push(("404", "No such resource"));
                }
                if changes {
                    common.push((
                        "409",
                        "Not possible in the current state, or changed concurrently: send it again",
                    ));
                }
                if operation.request_body.is_some() {
                    common.push(("413", "Body over api.max_body_bytes"));
                    common.push(("422", "Fields that are not valid here"));
                }
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            let content = ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build();
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(description)
                                    .content(PROBLEM_JSON, content)
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "The OpenAPI document")))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
