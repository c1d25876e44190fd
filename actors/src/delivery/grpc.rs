//! Attempts as gRPC calls: the task's JSON body becomes the method's request
//! message, the response message comes back as JSON for `expect`, and the
//! call's status (with the server's `RetryInfo`) is what the domain judges.
//!
//! The messages are described at run time: from descriptor sets uploaded to
//! Bida, else from the server's reflection service (cached per server).
//! Channels are kept per server; they connect only to addresses the egress
//! guard permits, as HTTP deliveries do.

use bida_domain::grpc::{GrpcCode, GrpcMethod, RpcOutcome};
use bida_domain::task::TaskSpec;
use bida_domain::Observation;
use bida_telemetry::{instruments, KeyValue};
use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions,
};
use prost_types::FileDescriptorProto;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Status;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_types::StatusExt;

use super::descriptors::Descriptors;
use super::{Address, Stamp, Transport};
use crate::egress::EgressGuard;
use crate::DeliveryConfig;

/// How long what a server's reflection said is trusted before it is asked again.
const REFLECTION_FRESH: Duration = Duration::from_secs(300);
/// A method the cached descriptors lack is looked up again at most this often.
const LOOKUP_AGAIN_AFTER: Duration = Duration::from_secs(5);

/// The request and response types of a method.
#[derive(Clone, Debug)]
pub struct MethodTypes {
    pub method: MethodDescriptor,
}

impl MethodTypes {
    pub fn input(&self) -> MessageDescriptor {
        self.method.input()
    }

    pub fn output(&self) -> MessageDescriptor {
        self.method.output()
    }

    /// The JSON of a task's body as the request message, or why it does not fit.
    pub fn request(&self, json: &[u8]) -> Result<DynamicMessage, String> {
        let input = self.input();
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let message =
            DynamicMessage::deserialize_with_options(input.clone(), &mut deserializer, &DeserializeOptions::new())
                .and_then(|message| deserializer.end().map(|()| message))
                .map_err(|e| format!("the body does not fit {}: {e}", input.full_name()))?;
        Ok(message)
    }
}

/// The method in a pool, if the pool describes it (a unary method only).
pub(super) fn find(pool: &DescriptorPool, method: &GrpcMethod) -> Option<MethodTypes> {
    let service = pool.get_service_by_name(method.service())?;
    let found = service.methods().find(|m| m.name() == method.method())?;
    Some(MethodTypes { method: found })
}

/// Adds files to a pool in the order their dependencies need (reflection
/// sends them in any order); files it has already are skipped. Answers the
/// services of the files added.
pub(super) fn add_files(pool: &mut DescriptorPool, files: Vec<FileDescriptorProto>) -> Result<Vec<String>, String> {
    let mut waiting: Vec<FileDescriptorProto> = files
        .into_iter()
        .filter(|file| pool.get_file_by_name(file.name()).is_none())
        .collect();
    let mut services = Vec::new();
    while !waiting.is_empty() {
        let ready = waiting
            .iter()
            .position(|file| file.dependency.iter().all(|dep| pool.get_file_by_name(dep).is_some()));
        let Some(index) = ready else {
            let missing: HashSet<&String> = waiting
                .iter()
                .flat_map(|file| file.dependency.iter())
                .filter(|dep| pool.get_file_by_name(dep).is_none() && !waiting.iter().any(|w| w.name() == dep.as_str()))
                .collect();
            return Err(format!("the descriptors need files that are not there: {missing:?}"));
        };
        let file = waiting.swap_remove(index);
        let package = file.package().to_string();
        services.extend(file.service.iter().map(|s| match package.as_str() {
            "" => s.name().to_string(),
            package => format!("{package}.{}", s.name()),
        }));
        let name = file.name().to_string();
        pool.add_file_descriptor_proto(file)
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(services)
}

#[derive(Clone)]
pub(super) struct GrpcTransport {
    egress: EgressGuard,
    connect_timeout: Duration,
    user_agent: String,
    /// Bytes of a response message, as JSON, kept for `expect` (as for HTTP bodies).
    max_response_bytes: usize,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    descriptors: Descriptors,
}

impl GrpcTransport {
    pub(super) fn new(config: &DeliveryConfig, egress: EgressGuard, descriptors: Descriptors) -> Self {
        Self {
            egress,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            user_agent: config.user_agent.clone(),
            max_response_bytes: config.max_response_bytes,
            channels: Arc::default(),
            descriptors,
        }
    }

    pub(super) fn descriptors(&self) -> &Descriptors {
        &self.descriptors
    }

    /// The channel to a server, made once and kept: it connects on first
    /// use, reconnects by itself, and multiplexes every call over HTTP/2.
    fn channel(&self, target: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(target) {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(target.to_string())
            .map_err(|e| format!("{target} is no gRPC server address: {e}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .user_agent(self.user_agent.clone())
            .map_err(|e| e.to_string())?;
        if target.starts_with("https:") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|e| format!("TLS for {target}: {e}"))?;
        }
        let guard = self.egress.clone();
        let connector = tower::service_fn(move |uri: http::Uri| {
            let guard = guard.clone();
            async move {
                let host = uri
                    .host()
                    .unwrap_or_default()
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let port = uri
                    .port_u16()
                    .unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
                let addresses = guard
                    .resolve(host, port)
                    .await
                    .map_err(|refused| std::io::Error::new(std::io::ErrorKind::PermissionDenied, refused))?;
                let stream = tokio::net::TcpStream::connect(&addresses[..]).await?;
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        let channel = endpoint.connect_with_connector_lazy(connector);
        channels.insert(target.to_string(), channel.clone());
        Ok(channel)
    }

    /// The method's types: uploaded descriptors first (the operator's word),
    /// else the server's reflection, asked again when what it said is stale
    /// or lacks the method.
    pub(super) async fn types(&self, target: &str, method: &GrpcMethod) -> Result<MethodTypes, Lookup> {
        let cached = self.descriptors.reflected_pool(target);
        let known = cached.as_ref().and_then(|(pool, _)| find(pool, method));
        // A method reflection describes does not send every attempt to the
        // store for uploads (their copy is still read again once a minute).
        if let Some(types) = self.descriptors.uploaded(method, known.is_none()).await {
            return Ok(types);
        }
        if let Some((_, age)) = cached {
            match &known {
                Some(types) if age < REFLECTION_FRESH => return Ok(types.clone()),
                None if age < LOOKUP_AGAIN_AFTER => return Err(Lookup::Unknown(unknown(method, target, None))),
                _ => {}
            }
        }
        let channel = self.channel(target).map_err(Lookup::Unknown)?;
        match reflect(channel, method.service()).await {
            Ok(pool) => {
                let found = find(&pool, method);
                self.descriptors.remember(target, pool);
                found.ok_or_else(|| Lookup::Unknown(unknown(method, target, None)))
            }
            // The server went away meanwhile: what it said last still holds.
            Err(_) if known.is_some() => Ok(known.expect("checked")),
            Err(Reflection::Absent(why)) => Err(Lookup::Unknown(unknown(method, target, Some(&why)))),
            Err(Reflection::Unreachable(why)) => Err(Lookup::Unreachable(why)),
        }
    }

    async fn call(&self, spec: &TaskSpec, method: &GrpcMethod, stamp: &Stamp<'_>) -> Observation {
        let target = spec.request.url.as_str();
        let channel = match self.channel(target) {
            Ok(channel) => channel,
            Err(error) => return Observation::Unsendable { error },
        };
        let types = match self.types(target, method).await {
            Ok(types) => types,
            Err(Lookup::Unknown(error)) => return Observation::Unsendable { error },
            Err(Lookup::Unreachable(error)) => return Observation::Failed { error },
        };
        if types.method.is_client_streaming() || types.method.is_server_streaming() {
            return Observation::Unsendable {
                error: format!("{method} streams; a delivery calls unary methods only"),
            };
        }
        let body = spec.request.body.as_ref().map_or(&b"{}"[..], |b| b.as_bytes());
        let message = match types.request(body) {
            Ok(message) => message,
            Err(error) => return Observation::Unsendable { error },
        };
        let mut request = tonic::Request::new(message);
        if let Err(error) = metadata(spec, stamp, request.metadata_mut()) {
            return Observation::Unsendable { error };
        }
        let timeout = Duration::from_millis(spec.policy.timeout_ms);
        request.set_timeout(timeout);
        let clock = Instant::now();
        let path = match http::uri::PathAndQuery::from_str(&method.path()) {
            Ok(path) => path,
            Err(e) => return Observation::Unsendable { error: e.to_string() },
        };
        let mut client = tonic::client::Grpc::new(channel);
        if let Err(e) = client.ready().await {
            return Observation::Failed {
                error: format!("{target}: {e}"),
            };
        }
        let codec = DynamicCodec {
            response: types.output(),
        };
        match client.unary(request, path, codec).await {
            Ok(response) => {
                let json = serde_json::to_vec(&Json(response.get_ref())).unwrap_or_default();
                let mut body = Bytes::from(json);
                body.truncate(self.max_response_bytes);
                Observation::Rpc(RpcOutcome {
                    code: GrpcCode::Ok,
                    message: String::new(),
                    body,
                    retry_after: None,
                })
            }
            // The channel ends a call at its deadline itself: that is the task's timeout.
            Err(status)
                if matches!(status.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded)
                    && clock.elapsed() >= timeout =>
            {
                Observation::Timeout {
                    after_ms: spec.policy.timeout_ms,
                }
            }
            Err(status) => Observation::Rpc(outcome_of(&status)),
        }
    }
}

/// Why a method's types could not be had.
pub(super) enum Lookup {
    /// Nobody describes them: retrying will not help until someone does.
    Unknown(String),
    /// The server could not be asked: a later attempt may reach it.
    Unreachable(String),
}

/// Why a server's reflection gave no descriptors.
enum Reflection {
    /// It answered, but has no reflection service or does not know the service.
    Absent(String),
    Unreachable(String),
}

impl Reflection {
    fn of(status: &Status) -> Self {
        let outcome = outcome_of(status);
        let why = format!("reflection: {}", outcome.describe());
        match outcome.code.retryable() {
            true => Self::Unreachable(why),
            false => Self::Absent(why),
        }
    }
}

fn unknown(method: &GrpcMethod, target: &str, why: Option<&str>) -> String {
    let why = why.map(|why| format!(" ({why})")).unwrap_or_default();
    format!(
        "the types of {method} are unknown: {target} does not describe it by reflection{why} and no uploaded \
         descriptor set does (POST /v1/descriptors)"
    )
}

/// A status as the task records it, with the delay its `RetryInfo` asks for.
fn outcome_of(status: &Status) -> RpcOutcome {
    RpcOutcome {
        code: GrpcCode::from_number(status.code() as i32),
        message: status.message().to_string(),
        body: Bytes::new(),
        retry_after: status.get_details_retry_info().and_then(|info| info.retry_delay),
    }
}

/// The attempt's stamp and the task's headers as call metadata. Headers
/// that belong to HTTP or to gRPC itself are not passed on.
fn metadata(spec: &TaskSpec, stamp: &Stamp<'_>, into: &mut tonic::metadata::MetadataMap) -> Result<(), String> {
    for (name, value) in &spec.request.headers {
        if matches!(name.as_str(), "content-type" | "te" | "user-agent") || name.starts_with("grpc-") {
            continue;
        }
        let key = MetadataKey::from_str(name).map_err(|e| format!("header {name}: {e}"))?;
        let value = MetadataValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
        into.insert(key, value);
    }
    for (name, value) in stamp.headers()? {
        let value = MetadataValue::try_from(value.as_bytes()).map_err(|e| format!("{name}: {e}"))?;
        into.insert(MetadataKey::from_static(name), value);
    }
    Ok(())
}

/// Asks a server's reflection service (`grpc.reflection.v1`) for the file
/// that defines `service` and every file it depends on.
async fn reflect(channel: Channel, service: &str) -> Result<DescriptorPool, Reflection> {
    let mut client = ServerReflectionClient::new(channel);
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let _ = sender
        .send(ask(MessageRequest::FileContainingSymbol(service.to_string())))
        .await;
    let mut answers = client
        .server_reflection_info(tokio_stream_of(receiver))
        .await
        .map_err(|status| Reflection::of(&status))?
        .into_inner();
    let mut pool = DescriptorPool::global();
    let mut files: HashMap<String, FileDescriptorProto> = HashMap::new();
    let mut asked: HashSet<String> = HashSet::new();
    let mut pending = 1;
    while pending > 0 {
        let answer = match answers.next().await {
            Some(Ok(answer)) => answer,
            Some(Err(status)) => return Err(Reflection::of(&status)),
            None => {
                return Err(Reflection::Unreachable(
                    "reflection: the server ended the stream early".into(),
                ))
            }
        };
        pending -= 1;
        match answer.message_response {
            Some(MessageResponse::FileDescriptorResponse(found)) => {
                for bytes in found.file_descriptor_proto {
                    let file = FileDescriptorProto::decode(&bytes[..])
                        .map_err(|e| Reflection::Absent(format!("reflection: {e}")))?;
                    files.entry(file.name().to_string()).or_insert(file);
                }
            }
            Some(MessageResponse::ErrorResponse(error)) => {
                let code = GrpcCode::from_number(error.error_code);
                return Err(Reflection::Absent(format!(
                    "reflection of {service}: {code}: {}",
                    error.error_message
                )));
            }
            _ => return Err(Reflection::Absent("reflection: an answer that is not a file".into())),
        }
        // Dependencies the server did not send with the file are asked for by name.
        let missing: Vec<String> = files
            .values()
            .flat_map(|file| file.dependency.iter().cloned())
            .filter(|dep| !files.contains_key(dep) && pool.get_file_by_name(dep).is_none())
            .filter(|dep| asked.insert(dep.clone()))
            .collect();
        for dep in missing {
            if sender.send(ask(MessageRequest::FileByFilename(dep))).await.is_ok() {
                pending += 1;
            }
        }
    }
    drop(sender);
    add_files(&mut pool, files.into_values().collect()).map_err(Reflection::Absent)?;
    Ok(pool)
}

fn tokio_stream_of<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// A status in a line: its code, and its message if it has one.
trait Describe {
    fn describe(&self) -> String;
}

impl Describe for RpcOutcome {
    fn describe(&self) -> String {
        match self.message.is_empty() {
            true => self.code.to_string(),
            false => format!("{} ({})", self.code, self.message),
        }
    }
}

/// A response message as canonical proto3 JSON, fields with default values
/// included (so `expect` can look at a `false` or a `0`).
struct Json<'a>(&'a DynamicMessage);

impl serde::Serialize for Json<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_with_options(serializer, &SerializeOptions::new().skip_default_fields(false))
    }
}

/// Encodes requests and decodes responses of types known only at run time.
struct DynamicCodec {
    response: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.response.clone())
    }
}

struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        let mut message = DynamicMessage::new(self.0.clone());
        message
            .merge(src)
            .map_err(|e| Status::internal(format!("decoding the response: {e}")))?;
        Ok(Some(message))
    }
}

impl Transport for GrpcTransport {
    fn span_attributes(&self, spec: &TaskSpec, _: &Address, attributes: &mut Vec<KeyValue>) {
        attributes.push(KeyValue::new("rpc.system", "grpc"));
        if let Some(call) = &spec.request.grpc {
            attributes.push(KeyValue::new("rpc.service", call.method.service().to_string()));
            attributes.push(KeyValue::new("rpc.method", call.method.method().to_string()));
        }
    }

    async fn send(&self, spec: &TaskSpec, _: &Address, stamp: &Stamp<'_>) -> Observation {
        match &spec.request.grpc {
            Some(call) => self.call(spec, &call.method, stamp).await,
            None => Observation::Unsendable {
                error: "not a gRPC task".into(),
            },
        }
    }

    fn record(&self, spec: &TaskSpec, address: &Address, observation: &Observation, elapsed: Duration) {
        let mut labels = vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("server.address", address.host.clone()),
            KeyValue::new("server.port", address.port),
        ];
        if let Some(call) = &spec.request.grpc {
            labels.push(KeyValue::new("rpc.service", call.method.service().to_string()));
            labels.push(KeyValue::new("rpc.method", call.method.method().to_string()));
        }
        match observation {
            Observation::Rpc(outcome) => {
                labels.push(KeyValue::new("rpc.grpc.status_code", i64::from(outcome.code.number())));
            }
            Observation::Timeout { .. } => labels.push(KeyValue::new("error.type", "timeout")),
            Observation::Failed { .. } => labels.push(KeyValue::new("error.type", "connection")),
            Observation::Unsendable { .. } => labels.push(KeyValue::new("error.type", "invalid_request")),
            _ => {}
        }
        instruments().rpc_duration.record(elapsed.as_secs_f64(), &labels);
    }

    fn finished_attributes(&self, observation: &Observation, attributes: &mut Vec<KeyValue>) {
        if let Observation::Rpc(outcome) = observation {
            attributes.push(KeyValue::new("rpc.grpc.status_code", i64::from(outcome.code.number())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };

    /// `orders.proto`: `Paid(PaidRequest{string order_id; int32 cents}) returns (Ack{bool accepted})`,
    /// written as descriptors so the unit tests need no compiler.
    fn orders_set() -> FileDescriptorSet {
        let field = |name: &str, number: i32, kind: prost_types::field_descriptor_proto::Type| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(prost_types::field_descriptor_proto::Label::Optional as i32),
            r#type: Some(kind as i32),
            json_name: None,
            ..Default::default()
        };
        use prost_types::field_descriptor_proto::Type;
        FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("orders.proto".into()),
                package: Some("orders.v1".into()),
                syntax: Some("proto3".into()),
                message_type: vec![
                    DescriptorProto {
                        name: Some("PaidRequest".into()),
                        field: vec![field("order_id", 1, Type::String), field("cents", 2, Type::Int32)],
                        ..Default::default()
                    },
                    DescriptorProto {
                        name: Some("Ack".into()),
                        field: vec![field("accepted", 1, Type::Bool)],
                        ..Default::default()
                    },
                ],
                service: vec![ServiceDescriptorProto {
                    name: Some("Callbacks".into()),
                    method: vec![MethodDescriptorProto {
                        name: Some("Paid".into()),
                        input_type: Some(".orders.v1.PaidRequest".into()),
                        output_type: Some(".orders.v1.Ack".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn uploaded_sets_describe_their_methods_and_check_bodies() {
        let descriptors = Descriptors::default();
        let services = descriptors.add(&orders_set().encode_to_vec()).unwrap();
        assert_eq!(services, ["orders.v1.Callbacks"]);
        let method = GrpcMethod::parse("orders.v1.Callbacks/Paid").unwrap();
        let types = descriptors.known("http://h", &method).expect("described");
        assert_eq!(types.input().full_name(), "orders.v1.PaidRequest");
        let message = types.request(br#"{"orderId": "A-1", "cents": 250}"#).unwrap();
        assert_eq!(message.encode_to_vec(), [10, 3, b'A', b'-', b'1', 16, 250, 1]);
        types
            .request(br#"{"order_id": "A-1"}"#)
            .expect("proto field names are JSON names too");
        for bad in [&br#"{"cents": "many"}"#[..], br#"{"colour": 1}"#, b"[1]", b"{} x"] {
            let error = types.request(bad).unwrap_err();
            assert!(error.contains("orders.v1.PaidRequest"), "{error}");
        }
        let refunded = GrpcMethod::parse("orders.v1.Callbacks/Refunded").unwrap();
        assert!(descriptors.known("http://h", &refunded).is_none());
        assert!(descriptors.add(b"\xff\xff").unwrap_err().contains("FileDescriptorSet"));
    }

    #[test]
    fn files_are_added_after_what_they_need() {
        let mut needs = orders_set().file.remove(0);
        needs.name = Some("b.proto".into());
        needs.package = Some("other".into());
        needs.dependency = vec!["a.proto".into()];
        needs.message_type.clear();
        needs.service[0].method[0].input_type = Some(".base.PaidRequest".into());
        needs.service[0].method[0].output_type = Some(".base.Ack".into());
        let mut base = orders_set().file.remove(0);
        base.name = Some("a.proto".into());
        base.package = Some("base".into());
        base.service.clear();
        let mut pool = DescriptorPool::new();
        let services = add_files(&mut pool, vec![needs.clone(), base]).unwrap();
        assert_eq!(services, ["other.Callbacks"]);
        let error = add_files(&mut DescriptorPool::new(), vec![needs]).unwrap_err();
        assert!(error.contains("a.proto"), "{error}");
    }

    #[test]
    fn statuses_carry_their_retry_info() {
        let status = Status::with_error_details(
            tonic::Code::Unavailable,
            "draining",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        let outcome = outcome_of(&status);
        assert_eq!(outcome.code, GrpcCode::Unavailable);
        assert_eq!(outcome.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(outcome.describe(), "UNAVAILABLE (draining)");
    }
}
