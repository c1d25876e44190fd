//! A durable pull consumer read as a stream of messages.

use async_nats::jetstream::{self, consumer::pull, AckKind};
use bida_domain::broker::{Offset, Position};
use bida_domain::consumer::{SourceMessage, StartAt};
use bida_domain::kinds::nats::{NatsConnection, NatsSource};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

use crate::sources::{
    clean_text, header_text, Acknowledge, Backlog, BacklogProbe, Client, Incoming, Source, SourceError,
};

/// How long the server waits, beyond the endpoint's timeout, for an
/// acknowledgement (or a sign of progress) before it hands the message to
/// another member. It is how long the messages of a node killed mid-delivery
/// wait before another node gets them (JetStream has no connection-bound
/// redelivery).
const RECORDING_MARGIN: Duration = Duration::from_secs(20);
/// How often the messages this node holds (at the endpoint, being recorded)
/// are reported in progress, which restarts their ack wait: a live node keeps
/// them however long their recording takes, as a live connection keeps its
/// messages with RabbitMQ or Kafka, instead of the server sending them again
/// every ack wait (delivered again, recorded again, piling up in the
/// recording window).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long one pull request waits for messages before the next is made.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How soon a message let go unrecorded (a node stopping) is offered again.
const NAK_DELAY: Duration = Duration::from_millis(200);
/// Unacknowledged messages the server allows the consumer as a whole (all
/// nodes); each node asks for no more than its own prefetch.
const MAX_ACK_PENDING: i64 = 100_000;

/// The client, named for the broker's connection list.
pub(super) async fn jetstream(connection: &NatsConnection, name: &str) -> Result<jetstream::Context, SourceError> {
    let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
    Ok(jetstream::new(connect(connection, name, options).await?))
}

/// Connects to the connection's servers with `options`, its token and name.
pub(super) async fn connect(
    connection: &NatsConnection,
    name: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, SourceError> {
    let mut options = options.name(name).connection_timeout(Duration::from_secs(5));
    if let Some(token) = &connection.token {
        options = options.token(token.clone());
    }
    let servers: Vec<async_nats::ServerAddr> = connection
        .url
        .split(',')
        .map(|url| url.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| SourceError::Connect(e.to_string()))?;
    tokio::time::timeout(Duration::from_secs(10), options.connect(servers))
        .await
        .map_err(|_| SourceError::Connect("no answer within 10 s".into()))?
        .map_err(|e| SourceError::Connect(e.to_string()))
}

fn broker_error(e: impl std::fmt::Display) -> SourceError {
    SourceError::Broker(e.to_string())
}

/// The durable consumer, created on first use; an existing one takes the
/// ack wait of the consumer's current endpoint timeout.
async fn durable(
    jetstream: &jetstream::Context,
    source: &NatsSource,
    delivery_timeout: Duration,
) -> Result<jetstream::consumer::Consumer<pull::Config>, SourceError> {
    let stream = jetstream
        .get_stream(&source.stream)
        .await
        .map_err(|e| SourceError::Broker(format!("stream {}: {e}", source.stream)))?;
    let config = pull::Config {
        durable_name: Some(source.durable.clone()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: delivery_timeout + RECORDING_MARGIN,
        max_ack_pending: MAX_ACK_PENDING,
        filter_subject: source.filter_subject.clone().unwrap_or_default(),
        deliver_policy: match source.start {
            StartAt::Earliest => jetstream::consumer::DeliverPolicy::All,
            StartAt::Latest => jetstream::consumer::DeliverPolicy::New,
        },
        ..Default::default()
    };
    match stream.create_consumer(config).await {
        Ok(consumer) => Ok(consumer),
        // A durable made with settings the server will not edit (another
        // filter, another start) is used as it is.
        Err(e) => {
            tracing::warn!(error = %e, durable = %source.durable, "NATS consumer kept its settings");
            stream.get_consumer(&source.durable).await.map_err(broker_error)
        }
    }
}

/// The consumer's backlog: messages of its stream not yet delivered to it and
/// those delivered but not yet acknowledged (as a Kafka group's lag counts
/// from its committed offset).
pub(super) async fn consumer_backlog(
    jetstream: &jetstream::Context,
    source: &NatsSource,
) -> Result<Vec<Backlog>, SourceError> {
    let mut consumer: jetstream::consumer::PullConsumer = jetstream
        .get_consumer_from_stream(&source.durable, &source.stream)
        .await
        .map_err(broker_error)?;
    let info = consumer.info().await.map_err(broker_error)?;
    let lag = info.num_pending as i64 + info.num_ack_pending as i64;
    let mut backlog = Backlog::of(&source.stream, None, lag);
    backlog.committed = Some(info.ack_floor.stream_sequence as i64);
    Ok(vec![backlog])
}

pub struct NatsMessages {
    jetstream: jetstream::Context,
    consumer: Arc<jetstream::consumer::Consumer<pull::Config>>,
    spec: NatsSource,
    /// The pull request being read. Made on a task of its own, so that a
    /// cancelled `next` does not drop a request the server is answering
    /// (its messages would wait out the ack wait).
    batch: Option<pull::Batch>,
    requesting: Option<JoinHandle<Result<pull::Batch, SourceError>>>,
    outstanding: Outstanding,
    /// Reports the outstanding messages in progress until the source closes.
    progress: JoinHandle<()>,
    prefetch: usize,
}

impl NatsMessages {
    pub async fn connect(connection: &NatsConnection, spec: &NatsSource, client: &Client) -> Result<Self, SourceError> {
        let jetstream = jetstream(connection, &client.id).await?;
        let consumer = durable(&jetstream, spec, client.delivery_timeout).await?;
        let outstanding = Outstanding::default();
        Ok(Self {
            jetstream,
            consumer: Arc::new(consumer),
            spec: spec.clone(),
            batch: None,
            requesting: None,
            progress: keep_in_progress(outstanding.clone()),
            outstanding,
            prefetch: client.concurrency.max(1) as usize,
        })
    }

    /// The current pull request, making one (for the prefetch) if none is open.
    async fn batch(&mut self) -> Result<&mut pull::Batch, SourceError> {
        if self.batch.is_none() {
            let requesting = self.requesting.get_or_insert_with(|| {
                let (consumer, prefetch) = (self.consumer.clone(), self.prefetch);
                tokio::spawn(async move {
                    consumer
                        .batch()
                        .max_messages(prefetch)
                        .expires(PULL_EXPIRES)
                        .messages()
                        .await
                        .map_err(|e| SourceError::Lost(e.to_string()))
                })
            });
            let made = requesting.await;
            self.requesting = None;
            self.batch = Some(made.map_err(|e| SourceError::Lost(e.to_string()))??);
        }
        Ok(self.batch.as_mut().expect("made above"))
    }

    /// Messages already received by the open request, refused at once so
    /// that another member takes them.
    async fn let_go(&mut self) {
        if let Some(mut batch) = self.batch.take() {
            while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(50), batch.next()).await {
                let _ = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
            }
        }
    }
}

/// Messages handed out and not yet acknowledged, by stream sequence: what
/// a closing source gives back.
type Outstanding = Arc<Mutex<HashMap<u64, Arc<jetstream::message::Acker>>>>;

/// Restarts the ack wait of every outstanding message every
/// [`PROGRESS_EVERY`], until aborted (the source closed or dropped).
fn keep_in_progress(outstanding: Outstanding) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PROGRESS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await; // the first tick is immediate
        loop {
            every.tick().await;
            let held: Vec<(u64, Arc<jetstream::message::Acker>)> = outstanding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(sequence, acker)| (*sequence, acker.clone()))
                .collect();
            for (sequence, acker) in held {
                // Acknowledged or given back meanwhile: a progress after a
                // refusal would hold back its redelivery for a whole ack wait.
                let still_held = outstanding
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&sequence);
                if still_held {
                    // Lost: the server sends the message again after the ack
                    // wait, and its task id makes that a repeat.
                    let _ = acker.ack_with(AckKind::Progress).await;
                }
            }
        }
    })
}

struct NatsAck {
    sequence: u64,
    outstanding: Outstanding,
}

impl NatsAck {
    fn take(&self) -> Option<Arc<jetstream::message::Acker>> {
        self.outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.sequence)
    }
}

impl Acknowledge for NatsAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), SourceError>> {
        let acker = self.take();
        Box::pin(async move {
            match acker {
                Some(acker) => acker
                    .ack_with(AckKind::Ack)
                    .await
                    .map_err(|e| SourceError::Lost(e.to_string())),
                // Given back when the source closed: another member has it.
                None => Ok(()),
            }
        })
    }
}

/// A message let go unrecorded (a lane forgotten, a delivery abandoned) is
/// offered again soon rather than after the whole ack wait.
impl Drop for NatsAck {
    fn drop(&mut self) {
        if let Some(acker) = self.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = acker.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                });
            }
        }
    }
}

/// A message as the pipeline takes it: id `nats:<stream>:<sequence>`, the
/// subject as its key.
fn source_message(stream: &str, sequence: u64, message: &async_nats::Message) -> SourceMessage {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(name))
            .and_then(|value| header_text(value.as_str().as_bytes()))
    };
    SourceMessage {
        message_id: format!("nats:{stream}:{sequence}"),
        position: Position::destination(stream).at(Offset::Number(sequence as i64)),
        key: Some(clean_text(message.subject.as_bytes())),
        body: message.payload.clone(),
        content_type: header("Content-Type").or_else(|| header("content-type")),
        traceparent: header("traceparent"),
    }
}

pub(super) fn stored_message(stream: &str, message: &jetstream::message::StreamMessage) -> SourceMessage {
    let as_message = async_nats::Message {
        subject: message.subject.clone(),
        reply: None,
        payload: message.payload.clone(),
        headers: Some(message.headers.clone()),
        status: None,
        description: None,
        length: message.payload.len(),
    };
    source_message(stream, message.sequence, &as_message)
}

impl Source for NatsMessages {
    async fn next(&mut self) -> Result<Incoming, SourceError> {
        loop {
            let message = match self.batch().await?.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    self.batch = None;
                    return Err(SourceError::Lost(e.to_string()));
                }
                // The request ended (all it asked for came, or it expired): ask again.
                None => {
                    self.batch = None;
                    continue;
                }
            };
            let sequence = match message.info() {
                Ok(info) => info.stream_sequence,
                // Not a stream message (a status the client passed on): nothing to deliver.
                Err(_) => continue,
            };
            let (message, acker) = message.split();
            self.outstanding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(sequence, Arc::new(acker));
            return Ok(Incoming {
                message: source_message(&self.spec.stream, sequence, &message),
                ack: Box::new(NatsAck {
                    sequence,
                    outstanding: self.outstanding.clone(),
                }),
            });
        }
    }

    /// Nothing is read while paused; a request already open keeps at most
    /// the prefetch, the rest waits in the stream.
    async fn set_paused(&mut self, _paused: bool) -> Result<(), SourceError> {
        Ok(())
    }

    /// The next request asks for the new number.
    async fn set_prefetch(&mut self, messages: u32) -> Result<(), SourceError> {
        self.prefetch = messages.max(1) as usize;
        Ok(())
    }

    fn backlog_probe(&self) -> Arc<dyn BacklogProbe> {
        Arc::new(NatsProbe {
            jetstream: self.jetstream.clone(),
            spec: self.spec.clone(),
        })
    }

    async fn close(mut self) {
        self.progress.abort();
        if let Some(requesting) = self.requesting.take() {
            if let Ok(Ok(batch)) = requesting.await {
                self.batch = Some(batch);
            }
        }
        self.let_go().await;
        // Whatever is still unacknowledged was not recorded: give it back now
        // rather than after the ack wait, and make sure the refusals leave.
        let outstanding: Vec<_> = self
            .outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, acker)| acker)
            .collect();
        for acker in outstanding {
            let _ = acker.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.jetstream.client().flush()).await;
    }
}

/// A source dropped without being closed stops reporting progress: its
/// messages come back after the ack wait.
impl Drop for NatsMessages {
    fn drop(&mut self) {
        self.progress.abort();
    }
}

struct NatsProbe {
    jetstream: jetstream::Context,
    spec: NatsSource,
}

impl BacklogProbe for NatsProbe {
    fn backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, SourceError>> {
        Box::pin(consumer_backlog(&self.jetstream, &self.spec))
    }
}
