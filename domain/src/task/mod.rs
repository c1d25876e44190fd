//! The callback task: one message to deliver to one endpoint, alive until it is
//! delivered, dead-lettered or cancelled.

mod aggregate;
mod commands;
mod errors;
mod events;
mod list;
mod produce;
mod spec;
mod status;
mod submission;
mod view;

pub use aggregate::CallbackTask;
pub use commands::{AttemptReport, TaskCommand};
pub use errors::TaskError;
pub use events::{AttemptRecord, TaskEvent};
pub use list::{TaskCursor, TaskFilter, TaskPage};
pub use produce::{ProduceSpec, ProducedTo, BROKER_SCHEME};
pub use spec::{DeliveryPolicy, DeliveryRequest, DeliveryTarget, EndpointHost, Method, Origin, TaskSpec};
pub use status::TaskStatus;
pub use submission::{check_deliver_at, BackoffInput, Limits, RequestEdit, Submission, TaskDefaults, RESERVED_HEADERS};
pub use view::{attempts_with_requests, TaskDetail, TaskSummary};

mod schedule;
pub use schedule::ScheduleChange;
