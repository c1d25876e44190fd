use actix_web::HttpResponse;
use utoipa::OpenApi;

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
    ),
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

pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
