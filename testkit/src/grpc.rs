//! A real gRPC server for delivery tests: `orders.v1.Callbacks` from
//! `testkit/proto/orders.proto` (compiled by protox, no `protoc`), with its
//! reflection service on or off. Each call answers what the test scripted
//! and is recorded with its metadata and its request as JSON.

use bytes::{Buf, BufMut};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

/// The `FileDescriptorSet` of `orders.proto` (with the well-known types it
/// imports), encoded: what a test uploads to Bida when reflection is off.
pub fn orders_descriptor_set() -> Vec<u8> {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    protox::compile(["orders.proto"], [proto])
        .expect("orders.proto compiles")
        .encode_to_vec()
}

/// What the server answers to one call.
#[derive(Clone, Debug)]
pub enum GrpcReply {
    /// `OK` with this `Ack` (as JSON).
    Ok(serde_json::Value),
    /// A status, with a `RetryInfo` detail when `retry_after` is given.
    Status {
        code: tonic::Code,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Holds the call this long, then answers `OK`.
    Hold(Duration),
}

impl GrpcReply {
    pub fn status(code: tonic::Code, message: &str) -> Self {
        Self::Status {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// One call the server got.
#[derive(Clone, Debug)]
pub struct GrpcHit {
    /// The request message as JSON.
    pub request: serde_json::Value,
    /// ASCII metadata by name (`webhook-id`, `bida-attempt`, `traceparent`...).
    pub metadata: BTreeMap<String, String>,
    pub received_at: std::time::Instant,
}

#[derive(Default)]
struct Script {
    replies: VecDeque<GrpcReply>,
    hits: Vec<GrpcHit>,
}

pub struct GrpcReceiver {
    /// `http://127.0.0.1:port`: the target a task names.
    pub target: String,
    pub address: SocketAddr,
    script: Arc<Mutex<Script>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GrpcReceiver {
    /// Starts the server on a free port; its reflection service answers when
    /// `reflection` is on. Calls not scripted answer `OK {"accepted": true}`.
    pub async fn start(reflection: bool) -> Self {
        let set = orders_descriptor_set();
        let pool = DescriptorPool::decode(&set[..]).expect("a valid set");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let address = listener.local_addr().expect("bound");
        let script = Arc::new(Mutex::new(Script::default()));
        let callbacks = Callbacks {
            request: pool.get_message_by_name("orders.v1.PaidRequest").expect("declared"),
            ack: pool.get_message_by_name("orders.v1.Ack").expect("declared"),
            script: script.clone(),
        };
        let reflection = reflection.then(|| {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(Box::leak(set.into_boxed_slice()))
                .build_v1()
                .expect("reflection service")
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(callbacks)
                .add_optional_service(reflection)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .expect("the gRPC server runs");
        });
        Self {
            target: format!("http://{address}"),
            address,
            script,
            stop: Some(stop),
        }
    }

    /// The next calls answer these, in order.
    pub fn reply(&self, replies: impl IntoIterator<Item = GrpcReply>) {
        self.script.lock().unwrap().replies.extend(replies);
    }

    pub fn hits(&self) -> Vec<GrpcHit> {
        self.script.lock().unwrap().hits.clone()
    }
}

impl Drop for GrpcReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `orders.v1.Callbacks`, answering as scripted.
#[derive(Clone)]
struct Callbacks {
    request: MessageDescriptor,
    ack: MessageDescriptor,
    script: Arc<Mutex<Script>>,
}

impl NamedService for Callbacks {
    const NAME: &'static str = "orders.v1.Callbacks";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Callbacks {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if request.uri().path() != "/orders.v1.Callbacks/Paid" {
                return Ok(Status::unimplemented(request.uri().path().to_string()).into_http());
            }
            let codec = DynamicCodec {
                request: this.request.clone(),
            };
            Ok(tonic::server::Grpc::new(codec).unary(Paid(this), request).await)
        })
    }
}

struct Paid(Callbacks);

impl tonic::server::UnaryService<DynamicMessage> for Paid {
    type Response = DynamicMessage;
    type Future = BoxFuture<Result<Response<DynamicMessage>, Status>>;

    fn call(&mut self, request: Request<DynamicMessage>) -> Self::Future {
        let callbacks = self.0.clone();
        Box::pin(async move {
            let received_at = std::time::Instant::now();
            let metadata = request
                .metadata()
                .iter()
                .filter_map(|entry| match entry {
                    tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                        Some((key.to_string(), value.to_str().ok()?.to_string()))
                    }
                    _ => None,
                })
                .collect();
            let request = serde_json::to_value(request.get_ref()).expect("JSON");
            let reply = {
                let mut script = callbacks.script.lock().unwrap();
                script.hits.push(GrpcHit {
                    request,
                    metadata,
                    received_at,
                });
                script.replies.pop_front()
            };
            let ok = |json: serde_json::Value| {
                DynamicMessage::deserialize(callbacks.ack.clone(), json)
                    .map(Response::new)
                    .map_err(|e| Status::internal(e.to_string()))
            };
            match reply.unwrap_or(GrpcReply::Ok(serde_json::json!({"accepted": true}))) {
                GrpcReply::Ok(json) => ok(json),
                GrpcReply::Hold(time) => {
                    tokio::time::sleep(time).await;
                    ok(serde_json::json!({"accepted": true}))
                }
                GrpcReply::Status {
                    code,
                    message,
                    retry_after: None,
                } => Err(Status::new(code, message)),
                GrpcReply::Status {
                    code,
                    message,
                    retry_after: Some(delay),
                } => {
                    use tonic_types::StatusExt;
                    Err(Status::with_error_details(
                        code,
                        message,
                        tonic_types::ErrorDetails::with_retry_info(Some(delay)),
                    ))
                }
            }
        })
    }
}

/// Decodes `PaidRequest`s and encodes whatever message is answered.
struct DynamicCodec {
    request: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = Encoding;
    type Decoder = Decoding;

    fn encoder(&mut self) -> Encoding {
        Encoding
    }

    fn decoder(&mut self) -> Decoding {
        Decoding(self.request.clone())
    }
}

struct Encoding;

impl Encoder for Encoding {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let bytes = item.encode_to_vec();
        dst.put_slice(&bytes);
        Ok(())
    }
}

struct Decoding(MessageDescriptor);

impl Decoder for Decoding {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.0.clone(), bytes)
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}
