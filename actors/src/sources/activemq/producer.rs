//! Writing to ActiveMQ for the API: one STOMP connection per broker; each
//! message is a `SEND` asking for a receipt, written once the broker's
//! `RECEIPT` for it came (for a persistent message, once it is stored).
//! Its content type, key (`bida-key`) and headers go as STOMP headers, as
//! Bida's ActiveMQ consumers read them.

use bida_domain::kinds::activemq::{ActivemqConnection, ActivemqTarget};
use bida_domain::kinds::produce::Outgoing;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::stomp::{Address, Connection, Frame, Sender};
use crate::produce::{Landed, Outcome, Produce};
use crate::sources::SourceError;

/// How long the broker may take to send a message's receipt.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages waiting for their receipts, by receipt id.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

pub struct ActivemqProducer {
    sender: Sender,
    waiting: Waiting,
    next_receipt: AtomicU64,
    alive: Arc<AtomicBool>,
    /// Why the connection ended, once it did.
    ended: Arc<Mutex<Option<SourceError>>>,
    reader: JoinHandle<()>,
}

impl Drop for ActivemqProducer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Produce for ActivemqProducer {
    type Connection = ActivemqConnection;
    type Target = ActivemqTarget;

    async fn open(connection: &ActivemqConnection) -> Result<Self, SourceError> {
        let stomp = Connection::open(&Address::parse(&connection.url)?).await?;
        let sender = stomp.sender.clone();
        let waiting = Waiting::default();
        let alive = Arc::new(AtomicBool::new(true));
        let ended = Arc::new(Mutex::new(None));
        Ok(Self {
            sender,
            reader: tokio::spawn(read_receipts(stomp, waiting.clone(), alive.clone(), ended.clone())),
            waiting,
            next_receipt: AtomicU64::new(1),
            alive,
            ended,
        })
    }

    fn usable(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Sends the messages in their order, then waits for every receipt at once.
    async fn write(&self, messages: &[(usize, &Outgoing, &ActivemqTarget)]) -> Outcome {
        let mut pending = Vec::with_capacity(messages.len());
        for (index, message, target) in messages {
            pending.push((*index, *target, self.send(message, target)));
        }
        let receipts = pending.into_iter().map(|(index, target, sent)| async move {
            let received = match sent {
                Ok(receipt) => match tokio::time::timeout(RECEIPT_TIMEOUT, receipt).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(self.why_ended()),
                    Err(_) => Err(SourceError::Lost(format!(
                        "no receipt from the broker in {RECEIPT_TIMEOUT:?}"
                    ))),
                },
                Err(e) => Err(e),
            };
            (index, target, received)
        });
        let mut outcome = Outcome::default();
        for (index, target, received) in join_all(receipts).await {
            match received {
                Ok(()) => outcome.wrote(
                    index,
                    Landed::Destination {
                        destination: target.stomp_destination(),
                        confirmed: true,
                    },
                ),
                Err(e) => {
                    self.alive.store(false, Ordering::Relaxed);
                    outcome.fail(index, e)
                }
            }
        }
        outcome
    }
}

impl ActivemqProducer {
    /// Sends one message; its receipt settles the answer.
    fn send(&self, message: &Outgoing, target: &ActivemqTarget) -> Result<oneshot::Receiver<()>, SourceError> {
        let receipt = format!("p-{}", self.next_receipt.fetch_add(1, Ordering::Relaxed));
        let mut frame = Frame::new("SEND")
            .header("destination", target.stomp_destination())
            .header("receipt", receipt.clone())
            .header("persistent", target.persistent.to_string())
            .header("content-type", message.content_type.clone());
        if let Some(priority) = target.priority {
            frame = frame.header("priority", priority.to_string());
        }
        if let Some(ms) = target.expiration_ms {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            frame = frame.header("expires", (now + u128::from(ms)).to_string());
        }
        if let Some(id) = &target.correlation_id {
            frame = frame.header("correlation-id", id.clone());
        }
        if let Some(key) = &target.key {
            frame = frame.header("bida-key", key.clone());
        }
        for (name, value) in &message.headers {
            frame = frame.header(name, value.clone());
        }
        frame.body = message.body.clone();
        let (received, receipt_came) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(receipt.clone(), received);
        if let Err(e) = self.sender.send(frame) {
            self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&receipt);
            return Err(e);
        }
        Ok(receipt_came)
    }

    fn why_ended(&self) -> SourceError {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| SourceError::Lost("the STOMP connection ended".into()))
    }
}

/// Reads the connection, settling each message with its receipt; the
/// connection's end (an ERROR frame included: ActiveMQ then closes it)
/// leaves the waiting messages unwritten.
async fn read_receipts(
    mut stomp: Connection,
    waiting: Waiting,
    alive: Arc<AtomicBool>,
    ended: Arc<Mutex<Option<SourceError>>>,
) {
    let error = loop {
        match stomp.next().await {
            Ok(frame) if frame.command == "RECEIPT" => {
                let Some(id) = frame.get("receipt-id") else { continue };
                if let Some(received) = waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
                    let _ = received.send(());
                }
            }
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    alive.store(false, Ordering::Relaxed);
    *ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    // Dropped senders: every waiting message learns the connection ended.
    waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
}
