//! The client against the OpenAPI document the server serves
//! (`bida_api::openapi_document()`, what `/openapi.json` answers): every
//! route the client calls is an operation, with the request and answer
//! schemas the client's types stand for; every field those types name is a
//! property of their schema, every query field a parameter of the route,
//! every enum variant a value of the schema's enum. A route, field or value
//! renamed on the server fails here.

use std::collections::BTreeSet;

use bida_client::routes::{self, Route};
use bida_client::*;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde_json::Value;

// ---------------------------------------------------------------- probe

/// What a type's `Deserialize` asks for: the field names of a struct, or
/// the variant names of an enum, as serde names them (renames applied).
#[derive(Debug)]
enum Probed {
    Fields(&'static [&'static str]),
    Variants(&'static [&'static str]),
    Other(String),
}

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probed::Fields(fields) => write!(f, "a struct of {fields:?}"),
            Probed::Variants(variants) => write!(f, "an enum of {variants:?}"),
            Probed::Other(other) => f.write_str(other),
        }
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Probed::Other(msg.to_string())
    }
}

struct Probe;

impl<'de> Deserializer<'de> for Probe {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed::Other(
            "not a struct or enum (a flattened struct asks for a map)".into(),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        Err(Probed::Fields(fields))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        Err(Probed::Variants(variants))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map identifier ignored_any
    }
}

/// The serde field names of a struct without flattened fields.
fn fields<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    match T::deserialize(Probe) {
        Err(Probed::Fields(fields)) => fields.to_vec(),
        Err(other) => panic!("{}: not a plain struct: {other}", std::any::type_name::<T>()),
        Ok(_) => unreachable!("the probe deserializes nothing"),
    }
}

/// The serde variant names of a unit enum.
fn variants<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    match T::deserialize(Probe) {
        Err(Probed::Variants(variants)) => variants.to_vec(),
        Err(other) => panic!("{}: not an enum: {other}", std::any::type_name::<T>()),
        Ok(_) => unreachable!("the probe deserializes nothing"),
    }
}

// ---------------------------------------------------------------- document

fn document() -> Value {
    bida_api::openapi_document()
}

fn schema<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    Some(&doc["components"]["schemas"][name]).filter(|s| s.is_object())
}

/// Every property a schema names: its own, its `$ref`'s, and those of
/// every `allOf`, `oneOf` and `anyOf` branch (a kind's fields count).
fn properties(doc: &Value, schema: &Value, into: &mut BTreeSet<String>, depth: usize) {
    assert!(depth < 16, "schema nesting too deep: {schema}");
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        properties(doc, &doc["components"]["schemas"][name], into, depth + 1);
    }
    if let Some(own) = schema["properties"].as_object() {
        into.extend(own.keys().cloned());
    }
    for combined in ["allOf", "oneOf", "anyOf"] {
        for branch in schema[combined].as_array().into_iter().flatten() {
            properties(doc, branch, into, depth + 1);
        }
    }
}

/// The schema name a request or answer schema refers to (`{"$ref"}`, or
/// `{"oneOf": [{"type": "null"}, {"$ref"}]}` for an optional body).
fn referred(schema: &Value) -> Option<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        return Some(reference.trim_start_matches("#/components/schemas/").to_string());
    }
    schema["oneOf"].as_array()?.iter().find_map(referred)
}

fn operation(doc: &Value, route: Route) -> Option<&Value> {
    Some(&doc["paths"][route.path][route.verb.openapi_name()]).filter(|o| o.is_object())
}

// ---------------------------------------------------------------- tables

/// A route, the schema of the body the client sends (if any), and the
/// answers it reads (status, schema).
type RouteRow = (Route, Option<&'static str>, Vec<(u16, Option<&'static str>)>);

/// A change made to the document.
type Rename = fn(&mut Value);

fn route_table() -> Vec<RouteRow> {
    use routes::*;
    vec![
        (SUBMIT_TASK, Some("Submission"), vec![(202, Some("TaskSummary"))]),
        (LIST_TASKS, None, vec![(200, Some("TaskListPage"))]),
        (GET_TASK, None, vec![(200, Some("TaskDetail"))]),
        (CANCEL_TASK, Some("CancelRequest"), vec![(200, Some("TaskDetail"))]),
        (RETRY_TASK, None, vec![(200, Some("TaskDetail"))]),
        (REPLAY_TASK, Some("RequestEdit"), vec![(200, Some("TaskDetail"))]),
        (REPLAY_TASKS, Some("ReplayRequest"), vec![(200, Some("ReplayOutcome"))]),
        (REGISTER_BROKER, Some("BrokerSpec"), vec![(201, Some("BrokerView"))]),
        (LIST_BROKERS, None, vec![(200, Some("BrokerList"))]),
        (GET_BROKER, None, vec![(200, Some("BrokerView"))]),
        (
            PRODUCE,
            Some("ProduceRequest"),
            vec![(200, Some("ProduceResult")), (202, Some("DelayedAccepted"))],
        ),
        (LIST_DELAYED, None, vec![(200, Some("DelayedPage"))]),
        (GET_DELAYED, None, vec![(200, Some("DelayedMessage"))]),
        (CANCEL_DELAYED, None, vec![(200, Some("DelayedMessage"))]),
        (
            CREATE_CONSUMER,
            Some("ConsumerInput"),
            vec![(201, Some("ConsumerView"))],
        ),
        (LIST_CONSUMERS, None, vec![(200, Some("ConsumerList"))]),
        (GET_CONSUMER, None, vec![(200, Some("ConsumerView"))]),
        (PATCH_CONSUMER, Some("ConsumerPatch"), vec![(200, Some("ConsumerView"))]),
        (DELETE_CONSUMER, None, vec![(204, None)]),
        (CONSUMER_ACTION, None, vec![(200, Some("ConsumerView"))]),
        (
            RESET_OFFSETS,
            Some("OffsetReset"),
            vec![(200, Some("OffsetsCommitted"))],
        ),
        (RESEND, Some("ResendRequest"), vec![(200, Some("ResendOutcome"))]),
        (PULL, Some("PullRequest"), vec![(200, Some("Pulled"))]),
        (ACK, Some("AckRequest"), vec![(200, Some("Settled"))]),
        (NACK, Some("NackRequest"), vec![(200, Some("Settled"))]),
        (HEARTBEAT, Some("HeartbeatRequest"), vec![(200, Some("MemberSettings"))]),
        (MEMBERS, None, vec![(200, Some("Members"))]),
    ]
}

/// Each client type and the schema it stands for, with the fields it
/// names. Types with flattened fields (a kind's fields, or a summary inside
/// a detail) list their own fields here: serde cannot tell them.
fn struct_table() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let with = |base: Vec<&'static str>, own: &[&'static str]| [base, own.to_vec()].concat();
    vec![
        ("Problem", "Problem", fields::<Problem>()),
        ("FieldError", "FieldError", fields::<FieldError>()),
        ("Page<_>", "TaskListPage", fields::<Page<Value>>()),
        ("Page<_>", "DelayedPage", fields::<Page<Value>>()),
        ("Page<_>", "BrokerList", fields::<Page<Value>>()),
        ("Page<_>", "ConsumerList", fields::<Page<Value>>()),
        // Tasks.
        ("Submission", "Submission", fields::<Submission>()),
        ("Expect", "Expect", fields::<Expect>()),
        ("JsonExpectation", "JsonExpectation", fields::<JsonExpectation>()),
        ("BackoffInput", "BackoffInput", fields::<BackoffInput>()),
        ("Backoff", "Backoff", fields::<Backoff>()),
        ("TaskSummary", "TaskSummary", fields::<TaskSummary>()),
        ("AttemptRecord", "AttemptRecord", fields::<AttemptRecord>()),
        (
            "TaskDetail",
            "TaskDetail",
            with(
                fields::<TaskSummary>(),
                &["request", "policy", "attempts", "version", "produce"],
            ),
        ),
        ("DeliveryRequest", "DeliveryRequest", fields::<DeliveryRequest>()),
        ("DeliveryPolicy", "DeliveryPolicy", fields::<DeliveryPolicy>()),
        ("ProduceSpec", "ProduceSpec", fields::<ProduceSpec>()),
        ("cancel_task's body", "CancelRequest", vec!["reason"]),
        ("RequestEdit", "RequestEdit", fields::<RequestEdit>()),
        ("ReplayRequest", "ReplayRequest", fields::<ReplayRequest>()),
        ("ReplayOutcome", "ReplayOutcome", fields::<ReplayOutcome>()),
        ("ReplayFailure", "ReplayFailure", fields::<ReplayFailure>()),
        // Brokers and produce.
        ("BrokerSpec", "BrokerSpec", vec!["name", "kind"]),
        (
            "BrokerView",
            "BrokerView",
            vec![
                "id",
                "name",
                "kind",
                "connection",
                "online",
                "deleted",
                "capabilities",
                "health",
            ],
        ),
        ("Capabilities", "Capabilities", fields::<Capabilities>()),
        ("BrokerHealth", "BrokerHealth", fields::<BrokerHealth>()),
        (
            "Message",
            "ProduceRequest",
            vec!["body", "body_base64", "content_type", "headers"],
        ),
        ("ProduceResult", "ProduceResult", fields::<ProduceResult>()),
        ("Written", "Written", vec!["index"]),
        ("DelayedAccepted", "DelayedAccepted", fields::<DelayedAccepted>()),
        ("DelayedId", "DelayedId", fields::<DelayedId>()),
        // Delayed messages.
        ("DelayedSummary", "DelayedSummary", fields::<DelayedSummary>()),
        (
            "DelayedMessage",
            "DelayedMessage",
            with(fields::<DelayedSummary>(), &["message"]),
        ),
        // Consumers.
        ("ConsumerInput", "ConsumerInput", fields::<ConsumerInput>()),
        ("EndpointInput", "EndpointInput", fields::<EndpointInput>()),
        ("PolicyInput", "PolicyInput", fields::<PolicyInput>()),
        ("BreakerInput", "BreakerInput", fields::<BreakerInput>()),
        ("ConsumerPatch", "ConsumerPatch", fields::<ConsumerPatch>()),
        ("ConsumerView", "ConsumerView", fields::<ConsumerView>()),
        (
            "Endpoint",
            "Endpoint",
            with([fields::<HttpEndpoint>(), fields::<PullEndpoint>()].concat(), &["kind"]),
        ),
        ("HttpEndpoint", "HttpEndpoint", fields::<HttpEndpoint>()),
        ("PullEndpoint", "PullEndpoint", fields::<PullEndpoint>()),
        ("Counters", "Counters", fields::<Counters>()),
        ("OffsetReset", "OffsetReset", vec!["to", "timestamp", "offsets"]),
        ("PartitionOffset", "PartitionOffset", fields::<PartitionOffset>()),
        ("OffsetsCommitted", "OffsetsCommitted", fields::<OffsetsCommitted>()),
        ("ResendRequest", "ResendRequest", fields::<ResendRequest>()),
        ("ResendOutcome", "ResendOutcome", fields::<ResendOutcome>()),
        // Pull consumers' members.
        ("PullRequest", "PullRequest", fields::<PullRequest>()),
        ("Pulled", "Pulled", fields::<Pulled>()),
        ("PulledMessage", "PulledMessage", fields::<PulledMessage>()),
        ("MemberSettings", "MemberSettings", fields::<MemberSettings>()),
        ("AckRequest", "AckRequest", fields::<AckRequest>()),
        ("NackRequest", "NackRequest", fields::<NackRequest>()),
        ("Settled", "Settled", fields::<Settled>()),
        ("HeartbeatRequest", "HeartbeatRequest", fields::<HeartbeatRequest>()),
        ("Members", "Members", fields::<Members>()),
        ("MemberView", "MemberView", fields::<MemberView>()),
        ("LaneView", "LaneView", fields::<LaneView>()),
    ]
}

/// Request types the client fills: every property their schema requires
/// is a field of theirs (a field the server starts to require is found).
fn request_table() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("Submission", fields::<Submission>()),
        ("CancelRequest", vec!["reason"]),
        ("RequestEdit", fields::<RequestEdit>()),
        ("ReplayRequest", fields::<ReplayRequest>()),
        ("Expect", fields::<Expect>()),
        ("JsonExpectation", fields::<JsonExpectation>()),
        ("BackoffInput", fields::<BackoffInput>()),
        ("ConsumerInput", fields::<ConsumerInput>()),
        ("EndpointInput", fields::<EndpointInput>()),
        ("PolicyInput", fields::<PolicyInput>()),
        ("BreakerInput", fields::<BreakerInput>()),
        ("ConsumerPatch", fields::<ConsumerPatch>()),
        ("ResendRequest", fields::<ResendRequest>()),
        ("PartitionOffset", fields::<PartitionOffset>()),
        ("PullRequest", fields::<PullRequest>()),
        ("AckRequest", fields::<AckRequest>()),
        ("NackRequest", fields::<NackRequest>()),
        ("HeartbeatRequest", fields::<HeartbeatRequest>()),
    ]
}

fn enum_table() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("TaskStatus", variants::<TaskStatus>()),
        ("Method", variants::<Method>()),
        ("DelayedState", variants::<DelayedState>()),
        ("DesiredState", variants::<DesiredState>()),
        ("ConsumerState", variants::<ConsumerState>()),
        ("Ordering", variants::<Ordering>()),
        ("PullMode", variants::<PullMode>()),
        ("EndpointKind", variants::<EndpointKind>()),
    ]
}

fn query_table() -> Vec<(Route, Vec<&'static str>)> {
    vec![
        (routes::LIST_TASKS, fields::<TaskQuery>()),
        (routes::LIST_DELAYED, fields::<DelayedQuery>()),
        (routes::LIST_BROKERS, fields::<PageQuery>()),
        (routes::LIST_CONSUMERS, fields::<PageQuery>()),
    ]
}

// ---------------------------------------------------------------- checks

/// What does not match between the client and `doc`, one line each.
fn mismatches(doc: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let name = |route: &Route| format!("{} {}", route.verb.openapi_name().to_uppercase(), route.path);

    // Routes, with the schemas of their bodies and answers.
    let table = route_table();
    if table.len() != routes::ALL.len() {
        found.push("the route table and routes::ALL differ".into());
    }
    for route in routes::ALL {
        let Some((_, request, answers)) = table.iter().find(|(r, ..)| r == route) else {
            found.push(format!("{route:?} is missing from the route table of this test"));
            continue;
        };
        let Some(operation) = operation(doc, *route) else {
            found.push(format!("{} is not an operation of the document", name(route)));
            continue;
        };
        let body = &operation["requestBody"]["content"]["application/json"]["schema"];
        match request {
            Some(expected) if referred(body).as_deref() != Some(*expected) => {
                found.push(format!("{}: the request body is not {expected}: {body}", name(route)))
            }
            None if !body.is_null() => {
                found.push(format!("{} takes a body the client does not send: {body}", name(route)))
            }
            _ => {}
        }
        for (status, expected) in answers {
            let answer = &operation["responses"][status.to_string()];
            let schema = &answer["content"]["application/json"]["schema"];
            if !answer.is_object() {
                found.push(format!("{} does not answer {status}", name(route)));
            } else if referred(schema).as_deref() != *expected {
                found.push(format!(
                    "{}: its {status} answer is not {expected:?}: {schema}",
                    name(route)
                ));
            }
        }
    }

    // Fields of the client's types.
    for (client_type, schema_name, fields) in struct_table() {
        let Some(schema) = schema(doc, schema_name) else {
            found.push(format!("{client_type}: no schema {schema_name}"));
            continue;
        };
        let mut known = BTreeSet::new();
        properties(doc, schema, &mut known, 0);
        for field in fields {
            if !known.contains(field) {
                found.push(format!(
                    "{client_type}.{field}: not a property of {schema_name} ({known:?})"
                ));
            }
        }
    }

    // What request schemas require.
    for (schema_name, fields) in request_table() {
        let required = schema(doc, schema_name)
            .and_then(|s| s["required"].as_array())
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        for field in required {
            if !fields.contains(&field) {
                found.push(format!(
                    "{schema_name} requires {field}, which the client does not send"
                ));
            }
        }
    }

    // Enum values.
    for (schema_name, variants) in enum_table() {
        let values: BTreeSet<&str> = schema(doc, schema_name)
            .and_then(|s| s["enum"].as_array())
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let variants: BTreeSet<&str> = variants.into_iter().collect();
        if variants != values {
            found.push(format!(
                "{schema_name}: the client has {variants:?}, the document {values:?}"
            ));
        }
    }

    // Query fields.
    for (route, fields) in query_table() {
        let parameters: BTreeSet<&str> = operation(doc, route)
            .and_then(|o| o["parameters"].as_array())
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        for field in fields {
            if !parameters.contains(field) {
                found.push(format!("{}: no query parameter {field} ({parameters:?})", name(&route)));
            }
        }
    }

    // What the schemas cannot say, in the document's words: the lifecycle
    // actions.
    let action = operation(doc, routes::CONSUMER_ACTION)
        .and_then(|o| o["parameters"].as_array())
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "action")
        .and_then(|p| p["description"].as_str())
        .unwrap_or_default();
    for known in ConsumerAction::ALL {
        if !action.contains(known.as_str()) {
            found.push(format!("action {} is not documented: {action:?}", known.as_str()));
        }
    }
    // A batch's `messages` and a delayed write's fields are properties of a
    // message, as the client sends them.
    let produce = schema(doc, "ProduceRequest")
        .and_then(|s| s["properties"].as_object())
        .cloned()
        .unwrap_or_default();
    for field in ["messages", "deliver_at", "delay_ms"] {
        if !produce.contains_key(field) {
            found.push(format!("ProduceRequest has no property {field}"));
        }
    }
    // An endpoint is tagged by `kind`: `http` with HttpEndpoint's fields,
    // `pull` with PullEndpoint's, as the client reads it.
    let tagged: BTreeSet<(String, String)> = schema(doc, "Endpoint")
        .and_then(|s| s["oneOf"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|branch| {
            let parts = branch["allOf"].as_array()?;
            let kind = parts.iter().find_map(|p| p["properties"]["kind"]["enum"][0].as_str())?;
            let fields = parts.iter().find_map(referred)?;
            Some((kind.to_string(), fields))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [("http", "HttpEndpoint"), ("pull", "PullEndpoint")]
        .into_iter()
        .map(|(kind, fields)| (kind.to_string(), fields.to_string()))
        .collect();
    let kinds: BTreeSet<&str> = variants::<EndpointKind>().into_iter().collect();
    if tagged != expected || kinds != ["http", "pull"].into() {
        found.push(format!(
            "Endpoint: the document tags {tagged:?}, the client reads {expected:?} (kinds {kinds:?})"
        ));
    }
    // A pulled message's body is `{"text"}` or `{"base64"}`, which the
    // schema (an object) says in words only.
    let body = schema(doc, "PulledMessage").map_or(&Value::Null, |s| &s["properties"]["body"]["description"]);
    let body = body.as_str().unwrap_or_default();
    if !(body.contains("\"text\"") && body.contains("\"base64\"")) {
        found.push(format!("PulledMessage.body is not said to be text or base64: {body:?}"));
    }
    found
}

#[test]
fn the_client_matches_the_servers_document() {
    let found = mismatches(&document());
    assert!(
        found.is_empty(),
        "the client and /openapi.json differ:\n{}",
        found.join("\n")
    );
}

/// The check itself: a route, a field, an enum value or a parameter
/// renamed in the document is found.
#[test]
fn a_rename_on_the_server_is_found() {
    let renames: Vec<(&str, Rename)> = vec![
        ("a route", |doc| {
            let paths = doc["paths"].as_object_mut().unwrap();
            let item = paths.remove("/v1/delayed/{id}").unwrap();
            paths.insert("/v1/delayed-messages/{id}".into(), item);
        }),
        ("a field", |doc| {
            let properties = doc["components"]["schemas"]["TaskSummary"]["properties"]
                .as_object_mut()
                .unwrap();
            let status = properties.remove("status").unwrap();
            properties.insert("state".into(), status);
        }),
        ("a field of a kind-open type", |doc| {
            let properties = doc["components"]["schemas"]["ProduceRequest"]["properties"]
                .as_object_mut()
                .unwrap();
            let body = properties.remove("body_base64").unwrap();
            properties.insert("body_bytes".into(), body);
        }),
        ("an enum value", |doc| {
            doc["components"]["schemas"]["DelayedState"]["enum"][3] = "written".into();
        }),
        ("a query parameter", |doc| {
            for parameter in doc["paths"]["/v1/delayed"]["get"]["parameters"].as_array_mut().unwrap() {
                if parameter["name"] == "broker_id" {
                    parameter["name"] = "broker".into();
                }
            }
        }),
        ("a required field added to a request", |doc| {
            doc["components"]["schemas"]["ConsumerInput"]["required"]
                .as_array_mut()
                .unwrap()
                .push("tenant".into());
        }),
        ("a pull route's field", |doc| {
            let properties = doc["components"]["schemas"]["PulledMessage"]["properties"]
                .as_object_mut()
                .unwrap();
            let until = properties.remove("leased_until").unwrap();
            properties.insert("lease_expires_at".into(), until);
        }),
        ("an endpoint's kind", |doc| {
            doc["components"]["schemas"]["Endpoint"]["oneOf"][1]["allOf"][1]["properties"]["kind"]["enum"][0] =
                "poll".into();
        }),
        ("a pull route", |doc| {
            let paths = doc["paths"].as_object_mut().unwrap();
            let item = paths.remove("/v1/consumers/{id}/members/{member}/heartbeat").unwrap();
            paths.insert("/v1/consumers/{id}/members/{member}/beat".into(), item);
        }),
        ("an answer's schema", |doc| {
            doc["paths"]["/v1/tasks"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]["$ref"] =
                "#/components/schemas/TaskDetail".into();
        }),
    ];
    for (what, rename) in renames {
        let mut doc = document();
        assert!(mismatches(&doc).is_empty());
        rename(&mut doc);
        assert!(!mismatches(&doc).is_empty(), "{what} renamed and not found");
    }
}
