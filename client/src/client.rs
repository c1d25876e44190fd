//! The client: one method per route.

use std::marker::PhantomData;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use url::Url;

use crate::error::{Error, Problem, PROBLEM_JSON};
use crate::pull::{PullConsumer, MAX_PULL_WAIT};
use crate::routes::{self, Route};
use crate::types::*;

/// A client of one Bida node (or a load balancer in front of several).
/// Cheap to clone: clones share their connections.
#[derive(Clone, Debug)]
pub struct Client {
    base: Url,
    key: String,
    http: reqwest::Client,
    /// The whole request's timeout; a long poll gets its wait on top.
    timeout: Duration,
}

/// Settings of a [`Client`] beyond its base URL and key.
#[derive(Debug)]
pub struct ClientBuilder {
    base_url: String,
    key: String,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    user_agent: String,
}

impl ClientBuilder {
    /// The whole request, from connecting to the last byte of the answer
    /// (30 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Connecting only (10 s by default).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long an idle connection is kept for reuse; keep it under the
    /// server's keep-alive (5 s) so that a connection the server is closing
    /// is not reused (2 s by default).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = Some(timeout);
        self
    }

    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let mut base = Url::parse(&self.base_url).map_err(|e| Error::BaseUrl(format!("{}: {e}", self.base_url)))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Error::BaseUrl(format!("{}: not an http(s) URL", self.base_url)));
        }
        base.set_query(None);
        base.set_fragment(None);
        let timeout = self.timeout.unwrap_or(Duration::from_secs(30));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(self.connect_timeout.unwrap_or(Duration::from_secs(10)))
            .pool_idle_timeout(self.pool_idle_timeout.unwrap_or(Duration::from_secs(2)))
            .user_agent(self.user_agent)
            .build()?;
        Ok(Client {
            base,
            key: self.key,
            http,
            timeout,
        })
    }
}

/// A task submitted: the task, and whether an earlier submission with the
/// same `Idempotency-Key` answered it (`Idempotent-Replayed: true`).
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    pub task: TaskSummary,
    pub replayed: bool,
}

/// The pages of a list, one request each.
#[derive(Debug)]
pub struct Pager<T> {
    client: Client,
    route: Route,
    query: Vec<(String, String)>,
    cursor: Option<String>,
    done: bool,
    item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Pager<T> {
    /// The next page's items; `None` after the last page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<T>>, Error> {
        if self.done {
            return Ok(None);
        }
        let mut query = self.query.clone();
        query.retain(|(name, _)| name != "cursor");
        if let Some(cursor) = &self.cursor {
            query.push(("cursor".into(), cursor.clone()));
        }
        let page: Page<T> = self.client.get(self.route, &[], &query).await?;
        self.cursor = page.next_cursor;
        self.done = self.cursor.is_none();
        Ok(Some(page.items))
    }

    /// Every item of every page that is left.
    pub async fn collect_all(mut self) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        while let Some(items) = self.next_page().await? {
            all.extend(items);
        }
        Ok(all)
    }
}

/// A query struct as `name=value` pairs (RFC 3339 for times).
fn query_pairs(query: &impl Serialize) -> Vec<(String, String)> {
    let Ok(Value::Object(fields)) = serde_json::to_value(query) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter_map(|(name, value)| match value {
            Value::Null => None,
            Value::String(text) => Some((name, text)),
            other => Some((name, other.to_string())),
        })
        .collect()
}

impl Client {
    /// A client of the node at `base_url` (`http://127.0.0.1:8080`) sending
    /// `Authorization: Bearer <api_key>`, with the default timeouts.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base_url, api_key).build()
    }

    pub fn builder(base_url: impl Into<String>, api_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            key: api_key.into(),
            timeout: None,
            connect_timeout: None,
            pool_idle_timeout: None,
            user_agent: concat!("bida-client/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The route's URL with `params` in its `{...}` segments, in order
    /// (each percent-encoded as one segment).
    fn url(&self, route: Route, params: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut params = params.iter();
            let mut segments = url
                .path_segments_mut()
                .expect("checked when the client was built: a base URL");
            segments.pop_if_empty();
            for segment in route.path.split('/').filter(|s| !s.is_empty()) {
                if segment.starts_with('{') {
                    segments.push(params.next().copied().unwrap_or_default());
                } else {
                    segments.push(segment);
                }
            }
        }
        url
    }

    /// Sends the request and reads the answer: one of `expected` (its body
    /// as `T`), or a problem.
    #[allow(clippy::too_many_arguments)]
    async fn send<T: DeserializeOwned>(
        &self,
        route: Route,
        params: &[&str],
        query: &[(String, String)],
        body: Option<Value>,
        headers: HeaderMap,
        expected: &[u16],
        timeout: Option<Duration>,
    ) -> Result<(u16, HeaderMap, T), Error> {
        let mut request = self
            .http
            .request(route.verb.method(), self.url(route, params))
            .bearer_auth(&self.key)
            .headers(headers);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        if expected.contains(&status) {
            let json: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            let value = serde_json::from_slice(json).map_err(|source| Error::Decode {
                status,
                body: text(),
                source,
            })?;
            return Ok((status, headers, value));
        }
        let problem_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(PROBLEM_JSON) || v.starts_with("application/json"));
        if status >= 400 && problem_type {
            if let Ok(problem) = serde_json::from_slice::<Problem>(&bytes) {
                return Err(Error::Api(Box::new(problem)));
            }
        }
        Err(Error::Unexpected { status, body: text() })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        route: Route,
        params: &[&str],
        query: &[(String, String)],
    ) -> Result<T, Error> {
        Ok(self
            .send(route, params, query, None, HeaderMap::new(), &[200], None)
            .await?
            .2)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        route: Route,
        params: &[&str],
        body: Option<Value>,
        expected: u16,
    ) -> Result<T, Error> {
        Ok(self
            .send(route, params, &[], body, HeaderMap::new(), &[expected], None)
            .await?
            .2)
    }

    fn pager<T>(&self, route: Route, query: &impl Serialize) -> Pager<T> {
        let query = query_pairs(query);
        let cursor = query.iter().find(|(name, _)| name == "cursor").map(|(_, c)| c.clone());
        Pager {
            client: self.clone(),
            route,
            query,
            cursor,
            done: false,
            item: PhantomData,
        }
    }

    // ------------------------------------------------------------ tasks

    /// Submits a callback task (`POST /v1/tasks`). With an idempotency key,
    /// submitting the same request again answers the same task
    /// (`replayed: true`); the key is scoped to the source app.
    pub async fn submit_task(&self, task: &Submission, idempotency_key: Option<&str>) -> Result<Submitted, Error> {
        let mut headers = HeaderMap::new();
        if let Some(key) = idempotency_key {
            let value = key
                .parse()
                .map_err(|_| Error::Invalid(format!("Idempotency-Key must be visible ASCII: {key:?}")))?;
            headers.insert("idempotency-key", value);
        }
        let body = serde_json::to_value(task).ok();
        let (_, headers, task) = self
            .send(routes::SUBMIT_TASK, &[], &[], body, headers, &[202], None)
            .await?;
        let replayed = headers
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(Submitted { task, replayed })
    }

    /// A task with its request, policy and every attempt.
    pub async fn task(&self, id: &str) -> Result<TaskDetail, Error> {
        self.get(routes::GET_TASK, &[id], &[]).await
    }

    /// One page of tasks, newest first.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<Page<TaskSummary>, Error> {
        self.get(routes::LIST_TASKS, &[], &query_pairs(query)).await
    }

    /// Every page of tasks matching `query`, from its cursor on.
    pub fn task_pages(&self, query: &TaskQuery) -> Pager<TaskSummary> {
        self.pager(routes::LIST_TASKS, query)
    }

    /// Stops a task's retries (an attempt in flight is not recalled).
    pub async fn cancel_task(&self, id: &str, reason: Option<&str>) -> Result<TaskDetail, Error> {
        let body = reason.map(|reason| json!({ "reason": reason }));
        self.call(routes::CANCEL_TASK, &[id], body, 200).await
    }

    /// Delivers a task again now: a dead, cancelled or waiting task gets a
    /// fresh round of attempts (`409` while an attempt is in flight).
    pub async fn retry_task(&self, id: &str) -> Result<TaskDetail, Error> {
        self.call(routes::RETRY_TASK, &[id], None, 200).await
    }

    /// Delivers a dead or cancelled task again, optionally changing its
    /// request first (recorded with who changed it).
    pub async fn replay_task(&self, id: &str, edit: Option<&RequestEdit>) -> Result<TaskDetail, Error> {
        let body = edit.and_then(|edit| serde_json::to_value(edit).ok());
        self.call(routes::REPLAY_TASK, &[id], body, 200).await
    }

    /// Delivers again every dead (or cancelled) task matching a filter.
    pub async fn replay_tasks(&self, request: &ReplayRequest) -> Result<ReplayOutcome, Error> {
        self.call(routes::REPLAY_TASKS, &[], serde_json::to_value(request).ok(), 200)
            .await
    }

    // ------------------------------------------------------------ brokers

    pub async fn register_broker(&self, broker: &BrokerSpec) -> Result<BrokerView, Error> {
        self.call(routes::REGISTER_BROKER, &[], serde_json::to_value(broker).ok(), 201)
            .await
    }

    /// A broker looked at live: its health and what is inside it.
    pub async fn broker(&self, id: &str) -> Result<BrokerView, Error> {
        self.get(routes::GET_BROKER, &[id], &[]).await
    }

    pub async fn brokers(&self, query: &PageQuery) -> Result<Page<BrokerView>, Error> {
        self.get(routes::LIST_BROKERS, &[], &query_pairs(query)).await
    }

    pub fn broker_pages(&self, query: &PageQuery) -> Pager<BrokerView> {
        self.pager(routes::LIST_BROKERS, query)
    }

    /// Writes one message now; answered once the broker confirmed it, with
    /// where it landed. A message with `deliver_at` or `delay_ms` among its
    /// fields is refused here: use [`Client::produce_delayed`].
    pub async fn produce(&self, broker_id: &str, message: Message) -> Result<Written, Error> {
        let mut written = self.produce_now(broker_id, serde_json::to_value(message).ok()).await?;
        match written.len() {
            1 => Ok(written.remove(0)),
            n => Err(Error::Unexpected {
                status: 200,
                body: format!("one message written, {n} answered"),
            }),
        }
    }

    /// Writes a batch (1 to 1,000 messages) now: all or, on a `503` or
    /// `422`, those in the problem's `written`.
    pub async fn produce_batch(&self, broker_id: &str, messages: Vec<Message>) -> Result<Vec<Written>, Error> {
        self.produce_now(broker_id, Some(json!({ "messages": messages }))).await
    }

    async fn produce_now(&self, broker_id: &str, body: Option<Value>) -> Result<Vec<Written>, Error> {
        let result: ProduceResult = self.call(routes::PRODUCE, &[broker_id], body, 200).await?;
        Ok(result.messages)
    }

    /// Holds one message until its time, then writes it (`202` at once).
    pub async fn produce_delayed(
        &self,
        broker_id: &str,
        message: Message,
        delay: Delay,
    ) -> Result<DelayedAccepted, Error> {
        let body = serde_json::to_value(message.delayed(delay)).ok();
        self.call(routes::PRODUCE, &[broker_id], body, 202).await
    }

    /// Holds a batch, each message until its own time.
    pub async fn produce_delayed_batch(
        &self,
        broker_id: &str,
        messages: Vec<(Message, Delay)>,
    ) -> Result<DelayedAccepted, Error> {
        let messages: Vec<Message> = messages.into_iter().map(|(m, delay)| m.delayed(delay)).collect();
        self.call(
            routes::PRODUCE,
            &[broker_id],
            Some(json!({ "messages": messages })),
            202,
        )
        .await
    }

    // ------------------------------------------------------------ delayed

    /// A delayed message: its state, destination and the message.
    pub async fn delayed(&self, id: &str) -> Result<DelayedMessage, Error> {
        self.get(routes::GET_DELAYED, &[id], &[]).await
    }

    pub async fn delayed_list(&self, query: &DelayedQuery) -> Result<Page<DelayedSummary>, Error> {
        self.get(routes::LIST_DELAYED, &[], &query_pairs(query)).await
    }

    pub fn delayed_pages(&self, query: &DelayedQuery) -> Pager<DelayedSummary> {
        self.pager(routes::LIST_DELAYED, query)
    }

    /// Cancels a delayed message while it is pending (`409` once produced).
    pub async fn cancel_delayed(&self, id: &str) -> Result<DelayedMessage, Error> {
        self.call(routes::CANCEL_DELAYED, &[id], None, 200).await
    }

    // ------------------------------------------------------------ consumers

    pub async fn create_consumer(&self, consumer: &ConsumerInput) -> Result<ConsumerView, Error> {
        self.call(routes::CREATE_CONSUMER, &[], serde_json::to_value(consumer).ok(), 201)
            .await
    }

    pub async fn consumer(&self, id: &str) -> Result<ConsumerView, Error> {
        self.get(routes::GET_CONSUMER, &[id], &[]).await
    }

    pub async fn consumers(&self, query: &PageQuery) -> Result<Page<ConsumerView>, Error> {
        self.get(routes::LIST_CONSUMERS, &[], &query_pairs(query)).await
    }

    pub fn consumer_pages(&self, query: &PageQuery) -> Pager<ConsumerView> {
        self.pager(routes::LIST_CONSUMERS, query)
    }

    /// Changes the endpoint or the policy; running consumers apply it.
    pub async fn patch_consumer(&self, id: &str, patch: &ConsumerPatch) -> Result<ConsumerView, Error> {
        self.call(routes::PATCH_CONSUMER, &[id], serde_json::to_value(patch).ok(), 200)
            .await
    }

    /// Deletes a consumer: it stops on every node; its tasks stay.
    pub async fn delete_consumer(&self, id: &str) -> Result<(), Error> {
        let _: Value = self.call(routes::DELETE_CONSUMER, &[id], None, 204).await?;
        Ok(())
    }

    /// `pause`, `resume`, `stop` or `start` on every node.
    pub async fn consumer_action(&self, id: &str, action: ConsumerAction) -> Result<ConsumerView, Error> {
        self.call(routes::CONSUMER_ACTION, &[id, action.as_str()], None, 200)
            .await
    }

    pub async fn pause_consumer(&self, id: &str) -> Result<ConsumerView, Error> {
        self.consumer_action(id, ConsumerAction::Pause).await
    }

    pub async fn resume_consumer(&self, id: &str) -> Result<ConsumerView, Error> {
        self.consumer_action(id, ConsumerAction::Resume).await
    }

    pub async fn stop_consumer(&self, id: &str) -> Result<ConsumerView, Error> {
        self.consumer_action(id, ConsumerAction::Stop).await
    }

    pub async fn start_consumer(&self, id: &str) -> Result<ConsumerView, Error> {
        self.consumer_action(id, ConsumerAction::Start).await
    }

    /// Kafka: moves a stopped consumer's group; answers what was committed.
    pub async fn reset_offsets(&self, id: &str, reset: &OffsetReset) -> Result<Vec<PartitionOffset>, Error> {
        let committed: OffsetsCommitted = self
            .call(routes::RESET_OFFSETS, &[id], serde_json::to_value(reset).ok(), 200)
            .await?;
        Ok(committed.committed)
    }

    /// Delivers again a recorded message or a range; answers the new tasks' ids.
    pub async fn resend(&self, id: &str, request: &ResendRequest) -> Result<Vec<String>, Error> {
        let outcome: ResendOutcome = self
            .call(routes::RESEND, &[id], serde_json::to_value(request).ok(), 200)
            .await?;
        Ok(outcome.task_ids)
    }

    // ------------------------------------------------------------ pull

    /// Leases up to `request.max` of a pull consumer's messages to the
    /// member, waiting up to `request.wait_ms` for one (a long poll: the
    /// request's timeout is the client's plus the wait). Also the member's
    /// heartbeat; the answer carries the consumer's live settings. `404`
    /// for an unknown consumer, `409` for one that is not a pull consumer,
    /// `422` for a member name that is not one.
    ///
    /// Ack or nack every message before its `leased_until`; see
    /// [`PulledMessage`] for what may come twice. [`Client::pull_consumer`]
    /// does all of it.
    pub async fn pull(&self, consumer_id: &str, request: &PullRequest) -> Result<Pulled, Error> {
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(0)).min(MAX_PULL_WAIT);
        let body = serde_json::to_value(request).ok();
        let timeout = self.timeout.saturating_add(wait);
        Ok(self
            .send(
                routes::PULL,
                &[consumer_id],
                &[],
                body,
                HeaderMap::new(),
                &[200],
                Some(timeout),
            )
            .await?
            .2)
    }

    /// Acknowledges handled messages by their leases (up to 1000): each is
    /// delivered. With `member`, leases another member holds are not
    /// settled. A lease no longer held comes back in `expired`: the message
    /// was (or will be) given again.
    pub async fn ack<I>(&self, consumer_id: &str, leases: I, member: Option<&str>) -> Result<Settled, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let request = AckRequest {
            leases: leases.into_iter().map(|lease| lease.as_ref().to_string()).collect(),
            member: member.map(String::from),
        };
        self.call(routes::ACK, &[consumer_id], serde_json::to_value(request).ok(), 200)
            .await
    }

    /// Gives messages back: pulled again after `delay_ms` (or the
    /// consumer's backoff) as a failed attempt, or dead-lettered with `dead`.
    pub async fn nack(&self, consumer_id: &str, request: &NackRequest) -> Result<Settled, Error> {
        self.call(routes::NACK, &[consumer_id], serde_json::to_value(request).ok(), 200)
            .await
    }

    /// Keeps a member alive while it pulls nothing (its handlers are busy);
    /// answers the consumer's live settings.
    pub async fn heartbeat(
        &self,
        consumer_id: &str,
        member: &str,
        request: &HeartbeatRequest,
    ) -> Result<MemberSettings, Error> {
        self.call(
            routes::HEARTBEAT,
            &[consumer_id, member],
            serde_json::to_value(request).ok(),
            200,
        )
        .await
    }

    /// A pull consumer's members (alive or gone, leases in flight, acks)
    /// and what waits in its lanes.
    pub async fn members(&self, consumer_id: &str) -> Result<Members, Error> {
        self.get(routes::MEMBERS, &[consumer_id], &[]).await
    }

    /// A member of the pull consumer `consumer_id` named `member`, to
    /// [`run`](PullConsumer::run) a handler on its messages.
    pub fn pull_consumer(&self, consumer_id: impl Into<String>, member: impl Into<String>) -> PullConsumer {
        PullConsumer::new(self.clone(), consumer_id.into(), member.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_filled_and_encoded_under_the_base() {
        let client = Client::new("http://127.0.0.1:8080/bida/", "k").unwrap();
        assert_eq!(
            client.url(routes::CONSUMER_ACTION, &["c 1/x", "pause"]).as_str(),
            "http://127.0.0.1:8080/bida/v1/consumers/c%201%2Fx/pause"
        );
        let client = Client::new("http://127.0.0.1:8080", "k").unwrap();
        assert_eq!(
            client.url(routes::LIST_TASKS, &[]).as_str(),
            "http://127.0.0.1:8080/v1/tasks"
        );
        assert!(Client::new("not a url", "k").is_err());
    }

    #[test]
    fn queries_skip_what_is_unset() {
        let query = TaskQuery {
            status: Some(TaskStatus::Dead),
            limit: Some(20),
            ..TaskQuery::default()
        };
        let mut pairs = query_pairs(&query);
        pairs.sort();
        assert_eq!(
            pairs,
            vec![("limit".into(), "20".into()), ("status".into(), "dead".into())]
        );
    }

    #[test]
    fn messages_carry_their_body_fields_and_delay() {
        let message = Message::bytes(&[0, 255]).field("routing_key", "q").header("h", "v");
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            json!({"body_base64": "AP8=", "routing_key": "q", "headers": {"h": "v"}})
        );
        assert_eq!(message.body_bytes(), Some(vec![0, 255]));
        let delayed = Message::json(json!({"a": 1})).delayed(Delay::After(Duration::from_millis(1500)));
        assert_eq!(
            serde_json::to_value(&delayed).unwrap(),
            json!({"body": {"a": 1}, "delay_ms": 1500})
        );
    }
}
