//! A NATS server's streams, and past messages read again by sequence.

use bida_domain::consumer::SourceMessage;
use bida_domain::kinds::nats::{NatsConnection, NatsSource};
use futures_util::StreamExt;

use super::source::{jetstream, stored_message};
use crate::sources::{Destination, Fact, Inspection, Range, SourceError};

/// Every stream with its messages and consumers, and the server's version.
pub(super) async fn look(connection: &NatsConnection) -> Result<Inspection, SourceError> {
    let jetstream = jetstream(connection, "bida-inventory").await?;
    let mut streams = jetstream.streams();
    let mut listed = Vec::new();
    while let Some(info) = streams.next().await {
        listed.push(info.map_err(|e| SourceError::Broker(e.to_string()))?);
    }
    listed.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    let destinations = listed
        .iter()
        .map(|info| Destination {
            name: info.config.name.clone(),
            messages: Some(info.state.messages as i64),
            written: Some(info.state.last_sequence as i64),
            partitions: None,
            consumers: Some(info.state.consumer_count as i64),
        })
        .collect();
    let shown: Vec<serde_json::Value> = listed
        .iter()
        .map(|info| {
            serde_json::json!({
                "name": info.config.name,
                "subjects": info.config.subjects,
                "messages": info.state.messages,
                "first_sequence": info.state.first_sequence,
                "last_sequence": info.state.last_sequence,
                "consumers": info.state.consumer_count,
            })
        })
        .collect();
    let server = jetstream.client().server_info();
    let mut inspection = Inspection {
        destinations,
        facts: vec![Fact {
            key: "version",
            label: ("Version", "版本"),
            value: format!("NATS {}", server.version),
        }],
        ..Inspection::default()
    };
    inspection.section("streams", shown);
    Ok(inspection)
}

/// The stream's messages from sequence `from` to `to` (inclusive); sequences
/// no longer in the stream (deleted, aged out) are skipped.
pub(super) async fn read_range(
    connection: &NatsConnection,
    source: &NatsSource,
    range: &Range,
) -> Result<Vec<SourceMessage>, SourceError> {
    if range.partition.is_some_and(|p| p != 0) {
        return Err(SourceError::Invalid("a NATS stream has no partitions".into()));
    }
    let (from, to) = range.numbers("NATS stream")?;
    let jetstream = jetstream(connection, "bida-resend").await?;
    let stream = jetstream
        .get_stream(&source.stream)
        .await
        .map_err(|e| SourceError::Broker(e.to_string()))?;
    let mut messages = Vec::new();
    for sequence in from.max(1)..=to {
        match stream.get_raw_message(sequence as u64).await {
            Ok(message) => {
                let wanted = source
                    .filter_subject
                    .as_deref()
                    .is_none_or(|filter| subject_matches(filter, &message.subject));
                if wanted {
                    messages.push(stored_message(&source.stream, &message));
                }
            }
            Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(SourceError::Broker(e.to_string())),
        }
    }
    Ok(messages)
}

/// NATS subject matching: `*` one token, `>` the rest.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in filter.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (wanted, Some(got)) if wanted == got => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn wildcards_match_as_nats_does() {
        assert!(subject_matches("orders.>", "orders.eu.paid"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("orders.*.paid", "orders.eu.paid"));
        assert!(!subject_matches("orders.*.paid", "orders.eu.sent"));
        assert!(subject_matches("orders", "orders"));
        assert!(!subject_matches("orders", "orders.eu"));
    }
}
