//! Bida's gRPC interface (`proto/bida/v1`, package `bida.v1`): submitting and
//! reading tasks, writing to brokers, and pull consumers' members, on a port
//! of its own (`grpc_listen`), with the reflection service. Each call is
//! admitted as the HTTP route it mirrors would be (the key in
//! `authorization` metadata, the route's rule in [`crate::access::RULES`],
//! the app's networks, the key's rate) and runs the same code as that route.

mod bridge;
mod messages;
mod pull;
mod tasks;

/// The message types, server traits and clients generated from `proto/bida/v1`.
pub mod proto {
    tonic::include_proto!("bida.v1");
}

use actix_web::web;
use bida_actors::audit::{acting_as, Requester};
use bida_domain::access::Caller;
use std::future::Future;
use tokio::sync::watch;
use tonic::{Request, Status};

use crate::access::{self, Access, Denied};
use crate::ApiState;
pub use bridge::FILE_DESCRIPTOR_SET;

/// A caller let through, and who its events are recorded as made by.
pub(crate) struct Admitted {
    pub caller: Caller,
    requester: Requester,
}

impl Admitted {
    /// Runs `work` on behalf of the caller (its events record who and from where).
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        acting_as(self.requester.clone(), work).await
    }
}

/// Lets a call of `method` (`bida.v1.Tasks/SubmitTask`) through as the HTTP
/// route `route` (`("POST", "/v1/tasks")`) would be.
pub(crate) async fn admit<T>(
    state: &ApiState,
    request: &Request<T>,
    method: &str,
    route: (&str, &str),
) -> Result<Admitted, Status> {
    let Ok(Some(Access::Key(need))) = access::rule(route.0, route.1) else {
        return Err(Status::internal(format!(
            "{method} mirrors {route:?}, which has no key rule"
        )));
    };
    let key = access::bearer(request.metadata().get("authorization").map(|v| v.as_bytes())).map_err(bridge::status)?;
    let client_ip = request.remote_addr().map(|a| a.ip());
    match access::admit(state, key, client_ip, need, &format!("call {method}")).await {
        Ok(caller) => Ok(Admitted {
            requester: Requester::new(&caller, client_ip),
            caller,
        }),
        Err(Denied::Refused(problem)) => Err(bridge::status(problem)),
        Err(Denied::OverRate { seconds }) => {
            let problem = access::over_rate(seconds);
            Err(<Status as tonic_types::StatusExt>::with_error_details(
                tonic::Code::ResourceExhausted,
                problem.detail,
                tonic_types::ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(seconds))),
            ))
        }
    }
}

/// Serves the interface on `listener` until `stop` turns true; open pull
/// streams end then.
pub async fn serve(
    listener: std::net::TcpListener,
    state: web::Data<ApiState>,
    stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    listener.set_nonblocking(true)?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(tokio::net::TcpListener::from_std(listener)?);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut until_stopped = stop.clone();
    tonic::transport::Server::builder()
        .add_service(reflection)
        .add_service(proto::tasks_server::TasksServer::new(tasks::TasksApi(state.clone())))
        .add_service(proto::messages_server::MessagesServer::new(messages::MessagesApi(
            state.clone(),
        )))
        .add_service(proto::pull_server::PullServer::new(pull::PullApi { state, stop }))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = until_stopped.wait_for(|stopped| *stopped).await;
        })
        .await?;
    Ok(())
}
