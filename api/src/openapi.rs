use actix_web::HttpResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, PathItem, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::problem::PROBLEM_JSON;
use crate::{
    apps, brokers, consumers, delayed, descriptors, health, history, monitoring, problem, pull, tasks, topics,
};

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
        tasks::replay_one,
        brokers::register,
        brokers::list,
        brokers::view,
        brokers::update,
        brokers::delete,
        brokers::events,
        brokers::offline,
        brokers::online,
        brokers::produce,
        descriptors::upload,
        descriptors::list,
        descriptors::view,
        descriptors::delete,
        topics::create,
        topics::list,
        topics::view,
        topics::change,
        topics::delete,
        topics::events,
        topics::publish,
        topics::search,
        delayed::list,
        delayed::detail,
        delayed::cancel,
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
        pull::pull,
        pull::ack,
        pull::nack,
        pull::heartbeat,
        pull::members,
        pull::remove_member,
        apps::create,
        apps::list,
        apps::view,
        apps::update,
        apps::delete,
        apps::events,
        apps::rotate_secret,
        apps::issue,
        apps::keys,
        apps::revoke,
        apps::issue_installation_key,
        apps::installation_keys,
        apps::revoke_installation_key,
        history::audit,
        monitoring::series,
        monitoring::overview,
        monitoring::nodes,
        monitoring::metrics,
        health::healthz,
        health::readyz,
        document,
    ),
    modifiers(&BearerKeys, &UniqueOperationIds),
    components(schemas(problem::Problem, history::AuditKind)),
    tags(
        (name = "tasks", description = "Callback tasks"),
        (name = "brokers", description = "MQ clusters consumers read from"),
        (name = "descriptors", description = "Protobuf descriptor sets for gRPC deliveries to servers without reflection"),
        (name = "topics", description = "Bida's own topics (the built-in broker, `builtin`)"),
        (name = "delayed", description = "Messages held until their time, then written to a broker"),
        (name = "consumers", description = "Broker sources bound to endpoints"),
        (name = "pull", description = "Members of pull consumers: pull, ack, nack, heartbeat"),
        (name = "apps", description = "Apps and their API keys (admin)"),
        (name = "monitoring", description = "Statistics, nodes and metrics"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

/// Every `/v1` route takes `Authorization: Bearer <key>`; the probes and,
/// unless configured otherwise, `/metrics` and this document are open.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("bida_…")
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let reads = [&mut item.get].map(|operation| (false, operation));
            let changes =
                [&mut item.post, &mut item.patch, &mut item.put, &mut item.delete].map(|operation| (true, operation));
            for (changes, operation) in reads
                .into_iter()
                .chain(changes)
                .filter_map(|(changes, operation)| operation.as_mut().map(|o| (changes, o)))
            {
                operation.security = Some(vec![SecurityRequirement::new("api_key", Vec::<String>::new())]);
                let mut common = vec![
                    ("400", "Malformed: a path, query or body Bida cannot read"),
                    ("401", "No key, or not a valid one"),
                    ("403", "The key's role or network does not allow it"),
                    ("429", "The key is over its rate (Retry-After says when to come back)"),
                    ("503", "The event store is unavailable"),
                ];
                if path.contains('{') {
                    common.push(("404", "No such resource"));
                }
                if changes {
                    common.push((
                        "409",
                        "Not possible in the current state, or changed concurrently: send it again",
                    ));
                }
                if operation.request_body.is_some() {
                    common.push(("413", "Body over api.max_body_bytes"));
                    common.push(("422", "Fields that are not valid here"));
                }
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            let content = ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build();
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(description)
                                    .content(PROBLEM_JSON, content)
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("post", &mut item.post),
        ("put", &mut item.put),
        ("patch", &mut item.patch),
        ("delete", &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|o| (method, o)))
}

/// utoipa names an operation after its handler, and several modules have a
/// `list` or a `view`; OpenAPI wants the ids unique (links refer to them).
struct UniqueOperationIds;

impl Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for (_, operation) in operations(item) {
                let tag = operation.tags.as_ref().and_then(|t| t.first()).cloned();
                if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut()) {
                    if !id.starts_with(&tag) {
                        *id = format!("{tag}_{id}");
                    }
                }
            }
        }
    }
}

fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// What utoipa's types cannot say, added to the generated document: fields
/// that exclude each other, a broker's fields per kind, and the roles an
/// installation-wide key may have.
fn refined(mut document: serde_json::Value) -> serde_json::Value {
    use serde_json::json;
    let schemas = &mut document["components"]["schemas"];
    schemas["Submission"]["allOf"] = json!([
        {"not": {"required": ["deliver_at", "delay_ms"]}},
        {"not": {"required": ["params", "body"]}},
        {"not": {"required": ["params", "body_base64"]}},
        {"not": {"required": ["body", "body_base64"]}},
    ]);
    // BrokerSpec flattens the connection's kind into the broker: one closed
    // object per kind (serde refuses other fields), each the kind's own
    // settings with `kind` and `name`.
    let per_kind = |enumerated: &str, extra: Option<(&str, serde_json::Value)>| -> Option<Vec<serde_json::Value>> {
        let variants = schemas[enumerated]["oneOf"].as_array()?;
        let mut closed = Vec::new();
        for variant in variants {
            let reference = variant["allOf"][0]["$ref"].as_str()?;
            let tag = variant["allOf"][1]["properties"]["kind"].clone();
            let own = &schemas[reference.trim_start_matches("#/components/schemas/")];
            let mut object = json!({
                "type": "object",
                "properties": own["properties"].clone(),
                "required": own["required"].as_array().cloned().unwrap_or_default(),
                "additionalProperties": false,
            });
            if let Some(description) = own.get("description") {
                object["description"] = description.clone();
            }
            object["properties"]["kind"] = tag;
            object["required"].as_array_mut()?.push(json!("kind"));
            if let Some((name, schema)) = &extra {
                object["properties"][*name] = schema.clone();
                object["required"].as_array_mut()?.push(json!(name));
            }
            closed.push(object);
        }
        Some(closed)
    };
    let name = schemas["BrokerSpec"]["allOf"][1]["properties"]["name"].clone();
    let (brokers, connections) = (
        per_kind("Connection", Some(("name", name))),
        per_kind("Connection", None),
    );
    if let Some(kinds) = brokers {
        schemas["BrokerSpec"] =
            json!({"oneOf": kinds, "description": "A broker: its name and how to reach it, by kind."});
    }
    // A connection in a view: the same closed objects, without the name
    // (each kind's struct is closed, which an `allOf` with the tag breaks).
    if let Some(kinds) = connections {
        schemas["Connection"] = json!({"oneOf": kinds, "description": "How to reach the broker, by kind."});
    }
    // A client's source is the fields of its broker's kind; several kinds'
    // shapes may fit one object (all their fields are optional).
    if let Some(kinds) = schemas["AnySourceInput"]["oneOf"].as_array().cloned() {
        schemas["AnySourceInput"]["anyOf"] = json!(kinds);
        if let Some(object) = schemas["AnySourceInput"].as_object_mut() {
            object.remove("oneOf");
        }
    }
    let option_names = json!({"type": "string", "pattern": bida_domain::broker::OPTION_NAME});
    for options in [
        "/BrokerSpec/oneOf/0/properties/options",
        "/KafkaConnection/properties/options",
    ] {
        if let Some(serde_json::Value::Object(options)) = schemas.pointer_mut(options) {
            options.insert("propertyNames".into(), option_names.clone());
        }
    }
    // A message is its shared fields and its kind's, open: one object (the
    // `allOf` utoipa makes of the flattened kind fields leaves schemathesis
    // 4.32 unable to generate bodies), with the delayed and batch forms.
    if let Some(shared) = schemas
        .pointer("/ProduceRequest/allOf/1/properties")
        .and_then(serde_json::Value::as_object)
        .cloned()
    {
        let mut properties = shared;
        properties.insert(
            "deliver_at".into(),
            json!({"type": "string", "format": "date-time",
                   "description": "Hold the message until this time, then write it (answered 202)."}),
        );
        properties.insert(
            "delay_ms".into(),
            json!({"type": "integer", "minimum": 0,
                   "description": "Hold the message this many milliseconds, then write it (answered 202)."}),
        );
        properties.insert(
            "messages".into(),
            json!({"type": "array", "minItems": 1, "maxItems": bida_domain::kinds::produce::MAX_BATCH,
                   "items": {"type": "object"},
                   "description": "A batch: messages of this same shape (then no other field beside it)."}),
        );
        let description = schemas["ProduceRequest"]["description"].clone();
        schemas["ProduceRequest"] = json!({"type": "object", "description": description, "properties": properties});
    }
    // serde refuses fields a kind of reset does not take.
    if let Some(kinds) = schemas["OffsetReset"]["oneOf"].as_array_mut() {
        for kind in kinds {
            kind["additionalProperties"] = json!(false);
        }
    }
    let installation_key =
        &mut document["paths"]["/v1/keys"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    *installation_key = json!({
        "allOf": [
            {"$ref": "#/components/schemas/KeyRequest"},
            {"properties": {"role": {"enum": ["admin", "operator", "viewer"]}},
             "description": "A producer key belongs to an app: create it under /v1/apps/{id}/keys."}
        ]
    });
    add_created_links(&mut document);
    add_delayed_links(&mut document);
    document
}

/// A delayed write's answer (202) leads to its message: the first id of
/// `POST /v1/brokers/{id}/messages`'s `messages` is `/v1/delayed/{id}`'s.
fn add_delayed_links(document: &mut serde_json::Value) {
    use serde_json::json;
    let operations: Vec<String> = ["get", "delete"]
        .into_iter()
        .filter_map(|method| document["paths"]["/v1/delayed/{id}"][method]["operationId"].as_str())
        .map(String::from)
        .collect();
    let accepted = &mut document["paths"]["/v1/brokers/{id}/messages"]["post"]["responses"]["202"];
    if accepted.is_null() {
        return;
    }
    for operation in operations {
        accepted["links"][&operation] = json!({
            "operationId": operation,
            "parameters": {"id": "$response.body#/messages/0/id"},
        });
    }
}

/// What a create answers leads to the routes of what it created: the `id` of
/// `POST /v1/brokers`'s answer is the `{id}` of `/v1/brokers/{id}...`, and so
/// on. Clients (and fuzzers' stateful runs) follow these links. (utoipa 5.5
/// writes a link's `operationId` as `operation_id`, so they are added here.)
fn add_created_links(document: &mut serde_json::Value) {
    use serde_json::{json, Map, Value};
    let Some(paths) = document["paths"].as_object() else {
        return;
    };
    let mut links: Vec<(String, &str, String, Value)> = Vec::new();
    for (path, item) in paths {
        let create = &item["post"];
        let Some(status) = ["201", "202"]
            .into_iter()
            .find(|s| create["responses"].get(*s).is_some())
        else {
            continue;
        };
        let own_params: Vec<&str> = path_params(path).collect();
        for (child, child_item) in paths {
            let Some(rest) = child.strip_prefix(path.as_str()).and_then(|r| r.strip_prefix("/{")) else {
                continue;
            };
            let Some((new_param, _)) = rest.split_once('}') else {
                continue;
            };
            if path_params(child).any(|p| p != new_param && !own_params.contains(&p)) {
                continue;
            }
            let Some(operations) = child_item.as_object() else {
                continue;
            };
            for operation in operations.values() {
                let Some(target) = operation["operationId"].as_str() else {
                    continue;
                };
                let mut parameters = Map::new();
                parameters.insert(new_param.to_string(), json!("$response.body#/id"));
                for param in &own_params {
                    parameters.insert(param.to_string(), json!(format!("$request.path.{param}")));
                }
                let link = json!({"operationId": target, "parameters": parameters});
                links.push((path.clone(), status, target.to_string(), link));
            }
        }
    }
    for (path, status, name, link) in links {
        document["paths"][&path]["post"]["responses"][status]["links"][name] = link;
    }
}

/// The document, built once.
pub fn document_json() -> &'static serde_json::Value {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| refined(serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()))
}

/// The document `/openapi.json` serves, for clients that check themselves
/// against it (the `bida-client` crate's tests).
pub fn openapi_document() -> serde_json::Value {
    document_json().clone()
}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "The OpenAPI document")))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(document_json())
}
