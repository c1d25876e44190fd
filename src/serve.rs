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
    let location = config.store_location();
    let store = Store::open_at(&location, &config.store)
        .await
        .with_context(|| format!("cannot open {location}"))?;
    tracing::info!("events, schedule and read models in {location}");
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
    let access = AccessService::new(store.clone(), &config.auth, sealer.clone());
    access
        .bootstrap(&config.auth)
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot make sure the installation has an admin key")?;
    let users = UserService::new(store.clone(), &config.console);
    users
        .bootstrap()
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot make sure the console has a user")?;
    // Bound before anything starts: a taken port is told plainly, with no
    // node half up (a task dropped after the runtime stops would abort).
    let listeners = bind(&config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let grpc_listeners = match config.grpc_listen.as_str() {
        "" => Vec::new(),
        address => bind(address).with_context(|| format!("cannot listen on {address} (grpc_listen)"))?,
    };
    // What the node reports is where it listens, its port even when asked for `:0`.
    let addresses: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    let node = Node::start(
        store.clone(),
        NodeConfig {
            name: config.node_name.clone(),
            listen: addresses.join(", "),
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
    let access_watch = access.spawn_watch();
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
        producers: node.producers(),
        delayed: node.delayed(),
        pulls: node.pulls(),
        consumers,
        topics: node.topics(),
        descriptors: node.descriptors(),
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
    let (grpc_stop, grpc_stopping) = tokio::sync::watch::channel(false);
    let mut grpc_servers = Vec::new();
    for listener in grpc_listeners {
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!("gRPC listening on {address}");
        let (state, stopping) = (state.clone(), grpc_stopping.clone());
        grpc_servers.push(actix_rt::spawn(async move {
            if let Err(e) = bida_api::grpc::serve(listener, state, stopping).await {
                tracing::error!(error = %e, %address, "the gRPC interface stopped");
            }
        }));
    }
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
    for listener in listeners {
        server = match server.listen(listener) {
            Ok(server) => server,
            Err(e) => {
                stop_background([projection, access_watch, sampler, probes]).await;
                node.shutdown().await;
                return Err(e).with_context(|| format!("cannot listen on {}", config.listen));
            }
        };
    }
    for address in &addresses {
        tracing::info!("listening on http://{address}");
    }
    // actix-server's own signal handling stops the actix System at SIGTERM,
    // and with it the arbiters the consumers run on, before they could
    // finish their deliveries; Bida stops the HTTP server itself instead and
    // then drains the node with everything still running.
    let server = server.disable_signals().run();
    let handle = server.handle();
    let stop_grpc = grpc_stop.clone();
    actix_rt::spawn(async move {
        match shutdown_signal().await {
            Ok(signal) => tracing::info!("{signal} received; stopping gracefully"),
            Err(e) => {
                // Serving on is better than stopping at once; only SIGKILL stops it then.
                tracing::error!(error = %e, "cannot listen for SIGTERM or SIGINT");
                std::future::pending::<()>().await;
            }
        }
        stop_grpc.send_replace(true);
        handle.stop(true).await;
    });
    let result = server.await;
    tracing::info!("stopping");
    // Calls under way finish (pull streams end at once); the node drains after.
    grpc_stop.send_replace(true);
    for grpc in grpc_servers {
        let _ = tokio::time::timeout(Duration::from_secs(5), grpc).await;
    }
    stop_background([projection, access_watch, sampler, probes]).await;
    node.shutdown().await;
    result.context("HTTP server failed")
}

/// Every address `listen` names (a host name may have several), bound as
/// actix-web's own `bind` would; an error when none can be.
fn bind(listen: &str) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;
    let mut bound = Vec::new();
    let mut last_error = None;
    for address in listen.to_socket_addrs()? {
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        let attempt = socket
            .bind(&address.into())
            .and_then(|()| socket.listen(1024))
            .and_then(|()| socket.set_nonblocking(true));
        match attempt {
            Ok(()) => bound.push(socket.into()),
            Err(e) => last_error = Some(e),
        }
    }
    match (bound.is_empty(), last_error) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "names no address",
        )),
        (false, _) => Ok(bound),
    }
}

/// Aborts the node's background tasks and waits until they are gone: a task
/// left for the runtime's teardown is dropped outside it, where a Postgres
/// listener's destructor panics and the process aborts.
async fn stop_background<const N: usize>(tasks: [tokio::task::JoinHandle<()>; N]) {
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
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
