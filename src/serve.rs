//! `bida serve`: one node of Bida.

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use bida_actors::access::AccessService;
use bida_actors::brokers::BrokerService;
use bida_actors::consumer::ConsumerService;
use bida_actors::users::UserService;
use bida_actors::{Node, NodeConfig};
use bida_api::{gate, problem_responses, routes, ApiState, KeyLimits};
use bida_projections::TaskList;
use bida_store::Store;
use bida_telemetry::MetricsText;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::gauges::Sampler;

pub async fn serve(config: Config, metrics: MetricsText) -> anyhow::Result<()> {
    let store = Store::open(&config.database_url, &config.store)
        .await
        .with_context(|| format!("cannot open the database at {}", redact(&config.database_url)))?;
    let sealer = config
        .secret_key
        .as_deref()
        .map(bida_actors::secrets::Sealer::from_base64)
        .transpose()
        .context("secret_key")?;
    if sealer.is_none() {
        tracing::warn!(
            "no secret_key (BIDA_SECRET_KEY): apps get no signing secret and broker passwords are \
             recorded in plain text; set one (`openssl rand -base64 32`) before putting Bida on a network"
        );
    }
    let node = Node::start(
        store.clone(),
        NodeConfig {
            name: config.node_name.clone(),
            listen: config.listen.clone(),
            delivery: config.delivery.clone(),
            scheduler: config.scheduler.clone(),
            notify: config.notify.clone(),
            retention: config.retention.clone(),
            task_defaults: config.tasks.defaults(),
            limits: config.tasks.limits(),
            sealer: sealer.clone(),
        },
    )
    .await
    .context("cannot start the node")?;
    let access = AccessService::new(store.clone(), &config.auth, sealer.clone());
    access
        .bootstrap(&config.auth)
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot make sure the installation has an admin key")?;
    let access_watch = access.spawn_watch();
    let users = UserService::new(store.clone(), &config.console);
    users
        .bootstrap()
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot make sure the console has a user")?;
    let projection = bida_projections::run(store.clone(), TaskList, config.projections.clone());

    let consumers = ConsumerService::new(store.clone(), node.tasks(), config.consumer_defaults());
    let (sampler, probes) = Sampler {
        store: store.clone(),
        consumers: consumers.clone(),
        brokers: BrokerService::new(store.clone(), sealer.clone()),
        node: node.view(),
        interval: Duration::from_millis(config.telemetry.sample_interval_ms.max(100)),
    }
    .spawn();
    let state = web::Data::new(ApiState {
        tasks: node.tasks(),
        brokers: BrokerService::new(store.clone(), sealer.clone()),
        consumers,
        access,
        auth: config.auth.clone(),
        users,
        console: config.console.clone(),
        login_limits: Arc::new(bida_api::LoginLimits::new(config.console.login_attempts_per_minute)),
        limits: Arc::new(KeyLimits::new(&config.api.rate_limit)),
        store,
        config: config.api.clone(),
        node_id: node.id().to_string(),
        node_ttl: config.scheduler.node_ttl(),
        metrics: Some(metrics),
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(gate))
            .wrap(problem_responses())
            .configure(routes)
    })
    .shutdown_timeout(config.scheduler.shutdown_grace_ms.div_ceil(1000).max(1));
    if config.http_workers > 0 {
        server = server.workers(config.http_workers);
    }
    let server = server
        .bind(&config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    for address in server.addrs() {
        tracing::info!("listening on http://{address}");
    }
    // actix-server's own signal handling stops the actix System at SIGTERM,
    // and with it the arbiters the consumers run on, before they could
    // finish their deliveries; Bida stops the HTTP server itself instead and
    // then drains the node with everything still running.
    let server = server.disable_signals().run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        match shutdown_signal().await {
            Ok(signal) => tracing::info!("{signal} received; stopping gracefully"),
            Err(e) => {
                // Serving on is better than stopping at once; only SIGKILL stops it then.
                tracing::error!(error = %e, "cannot listen for SIGTERM or SIGINT");
                std::future::pending::<()>().await;
            }
        }
        handle.stop(true).await;
    });
    let result = server.await;
    tracing::info!("stopping");
    projection.abort();
    access_watch.abort();
    sampler.abort();
    probes.abort();
    node.shutdown().await;
    result.context("HTTP server failed")
}

/// Waits for SIGTERM (orchestrators) or SIGINT (Ctrl-C).
async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let scheme_end = credentials.find("://").map_or(0, |i| i + 3);
            let user = credentials[scheme_end..].split(':').next().unwrap_or_default();
            format!("{}{user}:***@{host}", &credentials[..scheme_end])
        }
        _ => url.to_string(),
    }
}
