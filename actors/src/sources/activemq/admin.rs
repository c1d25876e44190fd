//! What ActiveMQ tells of itself and its queues, through its statistics
//! plugin (`<statisticsBrokerPlugin/>`): a message sent to
//! `ActiveMQ.Statistics.Destination.<queue>` (or `.Broker`) is answered on
//! its reply-to destination with a map of figures. It is the only window
//! STOMP opens (Debian's broker has no web console nor Jolokia).

use bida_domain::kinds::activemq::{ActivemqConnection, ActivemqSource};
use serde_json::{Map, Value};
use std::time::Duration;

use super::stomp::{Address, Connection, Frame};
use crate::sources::{Backlog, Destination, Fact, Inspection, SourceError};

/// How long the plugin has to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// One answer of the plugin: a map of figures by name.
type Figures = Map<String, Value>;

/// Reads a map as the broker writes it in JSON (XStream's): entries of
/// `{"string": [name, text]}` or `{"string": name, "<type>": value}`; an
/// empty map (`{"map": ""}`) ends a list and reads as `None`.
fn figures(body: &[u8]) -> Result<Option<Figures>, SourceError> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| SourceError::Broker(format!("statistics that are not JSON ({e})")))?;
    let entries = match &answer["map"]["entry"] {
        Value::Array(entries) => entries.clone(),
        entry @ Value::Object(_) => vec![entry.clone()],
        _ => return Ok(None),
    };
    let mut figures = Figures::new();
    for entry in entries {
        match &entry["string"] {
            Value::Array(pair) if pair.len() == 2 => {
                if let Some(name) = pair[0].as_str() {
                    figures.insert(name.to_string(), pair[1].clone());
                }
            }
            Value::String(name) => {
                let value = entry
                    .as_object()
                    .and_then(|fields| fields.iter().find(|(field, _)| *field != "string"))
                    .map(|(_, value)| value.clone())
                    .unwrap_or(Value::Null);
                figures.insert(name.clone(), value);
            }
            _ => {}
        }
    }
    Ok(Some(figures))
}

/// Asks the plugin about `subject` (`Broker`, `Destination.<name>` or a
/// wildcard such as `Destination.>`), and collects the maps it answers.
async fn ask(connection: &ActivemqConnection, subject: &str) -> Result<Vec<Figures>, SourceError> {
    let mut stomp = Connection::open(&Address::parse(&connection.url)?).await?;
    let reply = format!("/temp-queue/bida-statistics-{}", uuid::Uuid::new_v4().simple());
    stomp
        .request(
            Frame::new("SUBSCRIBE")
                .header("destination", reply.clone())
                .header("id", "statistics")
                .header("ack", "auto")
                .header("transformation", "jms-map-json"),
            drop,
        )
        .await?;
    let listing = subject.starts_with("Destination.");
    let mut question = Frame::new("SEND")
        .header("destination", format!("/queue/ActiveMQ.Statistics.{subject}"))
        .header("reply-to", reply);
    if listing {
        // Ends the list with an empty map, so that an unknown queue (which
        // gets no answer otherwise) is told from a broker without the plugin.
        question = question.header("ActiveMQ.Statistics.Destination.List.End.With.Null", "true");
    }
    stomp.sender.send(question)?;
    let mut answers = Vec::new();
    let read = tokio::time::timeout(ANSWER_WITHIN, async {
        loop {
            let frame = stomp.next().await?;
            if frame.command != "MESSAGE" {
                continue;
            }
            match figures(&frame.body)? {
                Some(map) => {
                    answers.push(map);
                    if !listing {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            }
        }
    })
    .await;
    stomp.close().await;
    match read {
        Ok(result) => result.map(|()| answers),
        Err(_) if answers.is_empty() => Err(SourceError::Broker(format!(
            "no statistics within {ANSWER_WITHIN:?}: the broker needs its statistics plugin \
             (<statisticsBrokerPlugin/> in activemq.xml)"
        ))),
        Err(_) => Ok(answers),
    }
}

fn number(figures: &Figures, name: &str) -> Option<i64> {
    figures.get(name).and_then(|value| {
        value
            .as_i64()
            .or_else(|| value.as_f64().map(|f| f as i64))
            .or_else(|| value.as_str()?.parse().ok())
    })
}

/// The queue a map is about (`queue://orders` → `orders`); topics are left out.
fn queue_name(figures: &Figures) -> Option<&str> {
    figures.get("destinationName")?.as_str()?.strip_prefix("queue://")
}

/// The source's queue: its size (messages not yet acknowledged, handed out
/// or not) is the lag.
pub(super) async fn backlog(
    connection: &ActivemqConnection,
    source: &ActivemqSource,
) -> Result<Vec<Backlog>, SourceError> {
    let answers = ask(connection, &format!("Destination.{}", source.queue)).await?;
    let size = answers
        .iter()
        .find(|figures| queue_name(figures) == Some(source.queue.as_str()))
        .and_then(|figures| number(figures, "size"))
        .unwrap_or(0);
    Ok(vec![Backlog::of(&source.queue, None, size)])
}

/// The broker's figures and its queues (the plugin's own and advisory ones
/// left out).
pub(super) async fn look(connection: &ActivemqConnection) -> Result<Inspection, SourceError> {
    let broker = ask(connection, "Broker").await?.into_iter().next().unwrap_or_default();
    let mut queues: Vec<Figures> = ask(connection, "Destination.>")
        .await?
        .into_iter()
        .filter(|figures| {
            queue_name(figures)
                .is_some_and(|name| !name.starts_with("ActiveMQ.Statistics") && !name.starts_with("ActiveMQ.Advisory"))
        })
        .collect();
    queues.sort_by(|a, b| queue_name(a).cmp(&queue_name(b)));
    let mut inspection = Inspection {
        destinations: queues
            .iter()
            .map(|figures| Destination {
                name: queue_name(figures).unwrap_or_default().to_string(),
                messages: number(figures, "size"),
                written: number(figures, "enqueueCount"),
                partitions: None,
                consumers: number(figures, "consumerCount"),
            })
            .collect(),
        ..Inspection::default()
    };
    for (key, label, name) in [
        ("name", ("Broker", "代理"), "brokerName"),
        ("messages", ("Messages held", "积压消息"), "size"),
        ("consumers", ("Consumers", "消费者"), "consumerCount"),
        ("store", ("Store used (%)", "存储使用率 (%)"), "storePercentUsage"),
        ("memory", ("Memory used (%)", "内存使用率 (%)"), "memoryPercentUsage"),
    ] {
        if let Some(value) = broker.get(name).filter(|value| !value.is_null()) {
            inspection.facts.push(Fact {
                key,
                label,
                value: value.as_str().map(String::from).unwrap_or_else(|| value.to_string()),
            });
        }
    }
    let told: Map<String, Value> = [
        "brokerName",
        "size",
        "enqueueCount",
        "dequeueCount",
        "consumerCount",
        "producerCount",
        "storeUsage",
        "storeLimit",
        "storePercentUsage",
        "memoryUsage",
        "memoryLimit",
        "memoryPercentUsage",
    ]
    .iter()
    .filter_map(|name| Some((name.to_string(), broker.get(*name)?.clone())))
    .collect();
    inspection.section("activemq", told);
    let listed: Vec<Value> = queues
        .iter()
        .map(|figures| {
            serde_json::json!({
                "name": queue_name(figures),
                "messages": number(figures, "size"),
                "consumers": number(figures, "consumerCount"),
                "enqueued": number(figures, "enqueueCount"),
                "dequeued": number(figures, "dequeueCount"),
            })
        })
        .collect();
    inspection.section("queues", listed);
    Ok(inspection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brokers_maps_are_read_as_figures() {
        let body = br#"{"map":{"entry":[{"string":"size","long":3},{"string":["destinationName","queue:\/\/orders"]},
            {"string":"consumerCount","long":1},{"string":"averageEnqueueTime","double":1.5}]}}"#;
        let queue = figures_of(body);
        assert_eq!(queue_name(&queue), Some("orders"));
        assert_eq!(number(&queue, "size"), Some(3));
        assert_eq!(number(&queue, "averageEnqueueTime"), Some(1));
        let one = br#"{"map":{"entry":{"string":"size","int":7}}}"#;
        assert_eq!(number(&figures_of(one), "size"), Some(7));
        assert_eq!(figures(br#"{"map":""}"#).unwrap(), None, "the end of a list");
        assert!(figures(b"<map/>").is_err());
    }

    fn figures_of(body: &[u8]) -> Figures {
        figures(body).unwrap().unwrap()
    }
}
