//! RabbitMQ through lapin: one queue per consumer, a channel each on a
//! connection shared per broker, manual acknowledgement,
//! prefetch tied to the consumer's concurrency; queues and cluster figures
//! from the management API when the broker names one.

mod admin;
pub(crate) mod producer;
mod shared;
mod source;

pub use admin::{QueueInfo, RabbitAdmin, RabbitNode, RabbitOverview};
pub use source::RabbitSource;

use bida_domain::kinds::rabbitmq::{RabbitmqConnection, RabbitmqSource};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Backlog, BoxedSource, Client, Destination, Fact, Inspection, Kind, SourceError};

pub struct Rabbitmq;

impl Kind for Rabbitmq {
    type Connection = RabbitmqConnection;
    type Source = RabbitmqSource;

    fn open<'a>(
        connection: &'a RabbitmqConnection,
        source: &'a RabbitmqSource,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<BoxedSource, SourceError>> {
        async move {
            let source = RabbitSource::connect(&connection.url, source, &client.id, client.concurrency).await?;
            Ok(BoxedSource::new(source))
        }
        .boxed()
    }

    fn look<'a>(
        connection: &'a RabbitmqConnection,
        known: Vec<&'a RabbitmqSource>,
    ) -> BoxFuture<'a, Result<Inspection, SourceError>> {
        async move {
            let admin = admin(connection);
            admin.check().await?;
            let known: Vec<String> = known.into_iter().map(|source| source.queue.clone()).collect();
            let queues = admin.queues(&known).await?;
            let mut inspection = Inspection {
                destinations: queues
                    .iter()
                    .map(|queue| Destination {
                        // Queues of other vhosts say which.
                        name: match queue.vhost.as_str() {
                            "/" => queue.name.clone(),
                            vhost => format!("{vhost}: {}", queue.name),
                        },
                        messages: Some(queue.messages),
                        consumers: Some(queue.consumers),
                        ..Destination::default()
                    })
                    .collect(),
                ..Inspection::default()
            };
            inspection.section("queues", queues);
            // The cluster figures need the `monitoring` tag; without them the
            // broker is still reachable and its queues listed.
            match admin.overview().await {
                Ok(Some(overview)) => {
                    inspection.publish_rate = Some(overview.publish_rate);
                    inspection.facts = facts(&overview);
                    inspection.section("rabbitmq", overview);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "RabbitMQ cluster figures unavailable"),
            }
            Ok(inspection)
        }
        .boxed()
    }

    fn backlog<'a>(
        connection: &'a RabbitmqConnection,
        source: &'a RabbitmqSource,
    ) -> BoxFuture<'a, Result<Vec<Backlog>, SourceError>> {
        async move {
            let queues = admin(connection).queues(std::slice::from_ref(&source.queue)).await?;
            Ok(queues
                .into_iter()
                .filter(|q| q.name == source.queue)
                .map(|q| Backlog::of(&q.name, None, q.messages))
                .collect())
        }
        .boxed()
    }
}

fn admin(connection: &RabbitmqConnection) -> RabbitAdmin {
    RabbitAdmin::new(&connection.url, connection.management_url.as_deref())
}

/// The cluster's figures for people: version, connections, messages, and
/// each node's memory and free disk.
fn facts(overview: &RabbitOverview) -> Vec<Fact> {
    let nodes = overview
        .nodes
        .iter()
        .map(|node| {
            let mut text = node.name.clone();
            if let Some(memory) = node.mem_used {
                text.push_str(&format!(" · {} MiB", memory / 1_048_576));
            }
            if let Some(disk) = node.disk_free {
                text.push_str(&format!(" · {} GiB free", disk / 1_073_741_824));
            }
            text
        })
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        Fact {
            key: "version",
            label: ("Version", "版本"),
            value: format!("RabbitMQ {}", overview.version),
        },
        Fact {
            key: "connections",
            label: ("Connections", "连接数"),
            value: overview.connections.to_string(),
        },
        Fact {
            key: "messages",
            label: ("Messages", "消息"),
            value: overview.messages.to_string(),
        },
        Fact {
            key: "nodes",
            label: ("Nodes", "节点"),
            value: nodes,
        },
    ]
}
