//! A typed client for Bida's HTTP API.
//!
//! ```no_run
//! # async fn example() -> Result<(), bida_client::Error> {
//! use bida_client::{Client, Message, Submission};
//! use serde_json::json;
//!
//! let bida = Client::new("http://127.0.0.1:8080", "bida_…")?;
//! let submitted = bida
//!     .submit_task(&Submission::new("https://orders.example.com/paid").params(json!({"order": 42})), Some("order-42-paid"))
//!     .await?;
//! println!("{} is {:?} (replayed: {})", submitted.task.id, submitted.task.status, submitted.replayed);
//!
//! let written = bida
//!     .produce("<broker id>", Message::json(json!({"id": 42})).field("routing_key", "orders"))
//!     .await?;
//! println!("landed: {:?}", written.landed);
//! # Ok(())
//! # }
//! ```
//!
//! A member of a pull consumer pulls its messages with [`Client::pull`]
//! and settles them with [`Client::ack`] and [`Client::nack`], or leaves it
//! all to [`PullConsumer::run`] (SDK mode: long polls, handlers up to the
//! consumer's concurrency, batched acks and nacks, heartbeats, retries and
//! a graceful stop), made by [`Client::pull_consumer`].
//!
//! Every method is one route of [`routes::ALL`]; the crate's tests check
//! those routes and the fields of every request and response type against
//! the OpenAPI document the server serves (`/openapi.json`).

mod client;
mod error;
mod pull;
pub mod routes;
#[cfg(test)]
mod sdk_tests;
mod types;

pub use client::{Client, ClientBuilder, Pager, Submitted};
pub use error::{Error, FieldError, Problem};
pub use pull::{PullConsumer, RunReport, MAX_PULL_WAIT};
pub use types::*;
