//! A channel's acknowledgements, sent in runs.
//!
//! RabbitMQ numbers a channel's deliveries in order, and one `basic.ack`
//! with `multiple` settles every delivery up to its tag. The pipeline
//! finishes messages out of order and in bursts (each group commit settles
//! dozens at once), so the leading run of finished deliveries goes out as one
//! frame and the broker settles it in one step, instead of a frame and a
//! settlement per message.
//!
//! A finished delivery behind one that is not (still at its endpoint, or
//! waiting for a retry's record) waits at most [`HOLD`] for the run to reach
//! it, then goes alone: a slow message must not hold back the
//! acknowledgements, and with them the prefetch window, of those after it.
//! A delivery never finished (abandoned at a stop) is never inside a run, so
//! no `multiple` can settle it: it goes back to the queue when the channel
//! closes.

use lapin::options::BasicAckOptions;
use lapin::Acker;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::sources::SourceError;

/// How long a finished delivery waits behind an unfinished one.
const HOLD: Duration = Duration::from_millis(20);

/// How long a closing source waits for its last acknowledgements.
const LAST_FLUSH: Duration = Duration::from_secs(5);

type Reply = oneshot::Sender<Result<(), SourceError>>;

/// A finished delivery waiting for its acknowledgement to be sent.
struct Finished<A> {
    acker: A,
    at: Instant,
    reply: Reply,
}

/// One `basic.ack` to send, and whom to tell when it is written.
struct Outgoing<A> {
    acker: A,
    multiple: bool,
    replies: Vec<Reply>,
}

/// The deliveries handed to the pipeline and not yet acknowledged, by tag.
struct Open<A> {
    deliveries: BTreeMap<u64, Option<Finished<A>>>,
    closing: bool,
    /// Nothing sends any more: an acknowledgement asked for now fails at once.
    gone: bool,
}

impl<A> Default for Open<A> {
    fn default() -> Self {
        Self {
            deliveries: BTreeMap::new(),
            closing: false,
            gone: false,
        }
    }
}

impl<A> Open<A> {
    fn handed(&mut self, tag: u64) {
        self.deliveries.insert(tag, None);
    }

    fn finished(&mut self, tag: u64, finished: Finished<A>) {
        if !self.gone {
            self.deliveries.insert(tag, Some(finished));
        }
    }

    /// Fails every acknowledgement still waiting (its reply is dropped).
    fn end(&mut self) {
        self.gone = true;
        self.deliveries.clear();
    }

    /// What to send now: the leading run of finished deliveries as one
    /// acknowledgement, and each finished delivery held past `HOLD` (all of
    /// them when closing) alone.
    fn due(&mut self, now: Instant) -> Vec<Outgoing<A>> {
        let mut sends = Vec::new();
        let mut run: Option<Outgoing<A>> = None;
        while self.deliveries.first_key_value().is_some_and(|(_, f)| f.is_some()) {
            let Some((_, Some(finished))) = self.deliveries.pop_first() else {
                break;
            };
            let mut replies = run.map(|r| r.replies).unwrap_or_default();
            let multiple = !replies.is_empty();
            replies.push(finished.reply);
            run = Some(Outgoing {
                acker: finished.acker,
                multiple,
                replies,
            });
        }
        sends.extend(run);
        let closing = self.closing;
        let alone: Vec<u64> = self
            .deliveries
            .iter()
            .filter_map(|(tag, finished)| {
                let finished = finished.as_ref()?;
                (closing || now.duration_since(finished.at) >= HOLD).then_some(*tag)
            })
            .collect();
        for tag in alone {
            if let Some(Some(finished)) = self.deliveries.remove(&tag) {
                sends.push(Outgoing {
                    acker: finished.acker,
                    multiple: false,
                    replies: vec![finished.reply],
                });
            }
        }
        sends
    }

    /// When the oldest held delivery's wait ends.
    fn next_due(&self) -> Option<Instant> {
        self.deliveries
            .values()
            .flatten()
            .map(|finished| finished.at + HOLD)
            .min()
    }
}

struct Shared {
    open: Mutex<Open<Acker>>,
    wake: Notify,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, Open<Acker>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The acknowledgements of one channel, and the task that sends them.
pub(super) struct AckWindow {
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
}

impl AckWindow {
    pub(super) fn new() -> Self {
        let shared = Arc::new(Shared {
            open: Mutex::new(Open::default()),
            wake: Notify::new(),
        });
        let sender = tokio::spawn(send_acks(shared.clone()));
        Self {
            shared,
            sender: Some(sender),
        }
    }

    /// Registers a delivery given to the pipeline, in the channel's order;
    /// returns what acknowledges it.
    pub(super) fn hand_out(&self, acker: Acker, tag: u64) -> WindowAck {
        self.shared.open().handed(tag);
        WindowAck {
            shared: self.shared.clone(),
            acker,
            tag,
        }
    }

    /// Sends every finished delivery's acknowledgement, then stops.
    pub(super) async fn close(mut self) {
        self.shared.open().closing = true;
        self.shared.wake.notify_one();
        if let Some(sender) = self.sender.take() {
            if tokio::time::timeout(LAST_FLUSH, sender).await.is_err() {
                tracing::warn!("the last RabbitMQ acknowledgements were not written in time; they will be redelivered");
            }
        }
    }
}

impl Drop for AckWindow {
    fn drop(&mut self) {
        if let Some(sender) = &self.sender {
            sender.abort();
        }
        self.shared.open().end();
    }
}

async fn send_acks(shared: Arc<Shared>) {
    loop {
        let next_due = shared.open().next_due();
        let held = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = held => {}
        }
        let (sends, closing) = {
            let mut open = shared.open();
            (open.due(Instant::now()), open.closing)
        };
        // Written together: lapin puts the frames on the socket in one go.
        futures_util::future::join_all(sends.into_iter().map(send)).await;
        if closing {
            return;
        }
    }
}

async fn send(send: Outgoing<Acker>) {
    let result = send
        .acker
        .ack(BasicAckOptions {
            multiple: send.multiple,
        })
        .await
        .map(drop)
        .map_err(|e| SourceError::Lost(e.to_string()));
    for reply in send.replies {
        let _ = reply.send(result.clone());
    }
}

/// Acknowledges one delivery through its channel's window.
pub(super) struct WindowAck {
    shared: Arc<Shared>,
    acker: Acker,
    tag: u64,
}

impl WindowAck {
    /// Done with: resolves once the acknowledgement covering it is written.
    pub(super) async fn ack(self) -> Result<(), SourceError> {
        let (reply, written) = oneshot::channel();
        let finished = Finished {
            acker: self.acker,
            at: Instant::now(),
            reply,
        };
        self.shared.open().finished(self.tag, finished);
        self.shared.wake.notify_one();
        // Not held while waiting: a window that ends drops the reply.
        drop(self.shared);
        written.await.unwrap_or_else(|_| {
            Err(SourceError::Lost(
                "the channel closed before the acknowledgement".into(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(open: &mut Open<u64>, tag: u64, at: Instant) -> oneshot::Receiver<Result<(), SourceError>> {
        let (reply, written) = oneshot::channel();
        open.finished(tag, Finished { acker: tag, at, reply });
        written
    }

    fn shape(sends: &[Outgoing<u64>]) -> Vec<(u64, bool, usize)> {
        sends.iter().map(|s| (s.acker, s.multiple, s.replies.len())).collect()
    }

    #[test]
    fn the_leading_run_goes_as_one_acknowledgement_and_the_rest_waits() {
        let now = Instant::now();
        let mut open = Open::default();
        for tag in 1..=6 {
            open.handed(tag);
        }
        for tag in [2, 1, 3, 5] {
            finish(&mut open, tag, now);
        }
        assert_eq!(shape(&open.due(now)), vec![(3, true, 3)]);
        assert_eq!(open.next_due(), Some(now + HOLD));
        // 4 is still at its endpoint: 5 goes alone once its wait is over.
        assert!(open.due(now + HOLD / 2).is_empty());
        assert_eq!(shape(&open.due(now + HOLD)), vec![(5, false, 1)]);
        assert_eq!(open.next_due(), None);
        finish(&mut open, 4, now);
        finish(&mut open, 6, now);
        assert_eq!(shape(&open.due(now)), vec![(6, true, 2)]);
        assert!(open.deliveries.is_empty());
    }

    #[test]
    fn an_unfinished_delivery_is_never_inside_a_run_even_when_closing() {
        let now = Instant::now();
        let mut open = Open::default();
        for tag in 1..=4 {
            open.handed(tag);
        }
        for tag in [1, 3, 4] {
            finish(&mut open, tag, now);
        }
        open.closing = true;
        let sends = open.due(now);
        assert_eq!(shape(&sends), vec![(1, false, 1), (3, false, 1), (4, false, 1)]);
        assert_eq!(open.deliveries.keys().copied().collect::<Vec<_>>(), vec![2]);
    }

    /// Against the local RabbitMQ: deliveries finished in random bursts and
    /// order, one held back. Every finished one is written (those behind the
    /// held one after their wait), and after a close only the held one comes
    /// back.
    #[tokio::test]
    async fn a_run_never_settles_the_held_delivery_and_a_closed_source_gives_only_it_back() {
        use crate::sources::rabbitmq::RabbitSource;
        use crate::sources::Source;
        use bida_domain::kinds::rabbitmq::RabbitmqSource;
        use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
        use lapin::{BasicProperties, Connection, ConnectionProperties};
        use rand::rngs::StdRng;
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};

        const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
        const MESSAGES: usize = 400;
        let queue = format!("bida-acks-{}", uuid::Uuid::new_v4());
        let spec = RabbitmqSource {
            queue: queue.clone(),
            declare: true,
            exchange: None,
            routing_key: None,
        };
        let mut source = RabbitSource::connect(URL, &spec, "bida-acks-test", MESSAGES as u32)
            .await
            .expect("the local RabbitMQ");
        let publisher = Connection::connect(URL, ConnectionProperties::default()).await.unwrap();
        let channel = publisher.create_channel().await.unwrap();
        for n in 0..MESSAGES {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    n.to_string().as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
        }

        let mut handed = Vec::new();
        for _ in 0..MESSAGES {
            let incoming = tokio::time::timeout(Duration::from_secs(10), source.next())
                .await
                .expect("a delivery within 10 s")
                .unwrap();
            handed.push((incoming.message.body.clone(), incoming.ack));
        }
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let (held_body, _held) = handed.remove(rng.random_range(0..MESSAGES));
        handed.shuffle(&mut rng);
        let mut written = Vec::new();
        while !handed.is_empty() {
            let burst = rng.random_range(1..=40).min(handed.len());
            for (_, ack) in handed.drain(..burst) {
                written.push(tokio::spawn(ack.ack()));
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
        }
        for ack in written {
            tokio::time::timeout(Duration::from_secs(10), ack)
                .await
                .expect("an acknowledgement within 10 s")
                .unwrap()
                .expect("written");
        }
        source.close().await;

        let mut again = RabbitSource::connect(URL, &spec, "bida-acks-test-2", MESSAGES as u32)
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), again.next())
            .await
            .expect("the held delivery within 10 s")
            .unwrap();
        assert_eq!(
            back.message.body, held_body,
            "seed {seed}: only the held delivery comes back"
        );
        let more = tokio::time::timeout(Duration::from_secs(1), again.next()).await;
        assert!(more.is_err(), "seed {seed}: a finished delivery came back");
        back.ack.ack().await.unwrap();
        again.close().await;
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        let _ = publisher.close(200, "done".into()).await;
    }
}
