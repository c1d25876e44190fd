//! `bida.v1.Pull`: a pull consumer's messages as a server stream, acked and
//! nacked by lease (POST /v1/consumers/{id}/pull, ack and nack).

use actix_web::web;
use bida_actors::pull::{self, MemberSettings, PullRequest, Pulled, Scope};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::admit;
use super::bridge::{reply, status, to_json};
use super::proto::{pull_server::Pull, AckRequest, ConsumeRequest, NackRequest, PulledBatch, Settled};
use crate::problem::Problem;
use crate::ApiState;

/// How long one long poll of the stream waits for messages.
const POLL: Duration = Duration::from_secs(10);
/// An idle stream gets an empty batch this often, so that proxies and the
/// member see it alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

pub struct PullApi {
    pub state: web::Data<ApiState>,
    /// The node is stopping: open streams end.
    pub stop: watch::Receiver<bool>,
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn scope(app: &Option<String>) -> Scope<'_> {
    match app {
        Some(app) => Scope::App(app),
        None => Scope::Any,
    }
}

/// A settle request's consumer, and its other fields as the HTTP body.
fn settle_body(message: &impl prost::Message, name: &str) -> Result<(String, Value), Status> {
    let mut body = to_json(message, name)?;
    let consumer = body
        .as_object_mut()
        .and_then(|fields| fields.remove("consumer_id"))
        .and_then(|id| id.as_str().map(str::to_string))
        .unwrap_or_default();
    Ok((consumer, body))
}

#[tonic::async_trait]
impl Pull for PullApi {
    type ConsumeStream = ReceiverStream<Result<PulledBatch, Status>>;

    async fn consume(&self, request: Request<ConsumeRequest>) -> Result<Response<Self::ConsumeStream>, Status> {
        let admitted = admit(&self.state, &request, "bida.v1.Pull/Consume").await?;
        let ask = request.into_inner();
        let pull_request = move |wait: Duration| PullRequest {
            member: ask.member.clone(),
            max: ask.max,
            wait_ms: Some(wait.as_millis() as u64),
            address: ask.address.clone(),
            client_version: ask.client_version.clone(),
        };
        let consumer = ask.consumer_id.clone();
        let pulls = self.state.pulls.clone();
        let app = admitted.caller.app_id.clone();
        // The first pull does not wait: a consumer that is missing, not a
        // pull consumer or a bad member name fails the call itself.
        let first = admitted
            .run(pulls.pull(&consumer, scope(&app), pull_request(Duration::ZERO)))
            .await
            .map_err(|e| status(Problem::from(e)))?;
        let (sender, receiver) = mpsc::channel(1);
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let mut pulled: Pulled = first;
            let mut told: Option<MemberSettings> = None;
            let mut last_sent = Instant::now();
            loop {
                let news = !pulled.messages.is_empty() || told.as_ref() != Some(&pulled.settings);
                if news || last_sent.elapsed() >= KEEP_ALIVE {
                    told = Some(pulled.settings.clone());
                    let batch = reply(&pulled, "bida.v1.PulledBatch");
                    let failed = batch.is_err();
                    // Waits while the member does not read: nothing more is leased meanwhile.
                    if sender.send(batch).await.is_err() || failed {
                        return;
                    }
                    last_sent = Instant::now();
                }
                let next = admitted.run(pulls.pull(&consumer, scope(&app), pull_request(POLL)));
                pulled = tokio::select! {
                    () = stopped(&mut stop) => return,
                    result = next => match result {
                        Ok(pulled) => pulled,
                        Err(e) => {
                            let _ = sender.send(Err(status(Problem::from(e)))).await;
                            return;
                        }
                    },
                };
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<Settled>, Status> {
        let admitted = admit(&self.state, &request, "bida.v1.Pull/Ack").await?;
        let (consumer, body) = settle_body(request.get_ref(), "bida.v1.AckRequest")?;
        let ack: pull::AckRequest = crate::json::from_value(body).map_err(status)?;
        let settled = admitted
            .run(self.state.pulls.ack(&consumer, scope(&admitted.caller.app_id), ack))
            .await
            .map_err(|e| status(Problem::from(e)))?;
        Ok(Response::new(reply(&settled, "bida.v1.Settled")?))
    }

    async fn nack(&self, request: Request<NackRequest>) -> Result<Response<Settled>, Status> {
        let admitted = admit(&self.state, &request, "bida.v1.Pull/Nack").await?;
        let (consumer, body) = settle_body(request.get_ref(), "bida.v1.NackRequest")?;
        let nack: pull::NackRequest = crate::json::from_value(body).map_err(status)?;
        let settled = admitted
            .run(self.state.pulls.nack(&consumer, scope(&admitted.caller.app_id), nack))
            .await
            .map_err(|e| status(Problem::from(e)))?;
        Ok(Response::new(reply(&settled, "bida.v1.Settled")?))
    }
}
