use actix_web::HttpResponse;
use utoipa::OpenApi;

use crate::{health, problem, tasks};

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
        health::healthz,
        health::readyz,
    ),
    components(schemas(problem::Problem)),
    tags(
        (name = "tasks", description = "Callback tasks"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
