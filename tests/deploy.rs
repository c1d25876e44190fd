//! The deployment files, checked by tools that understand them: the compose
//! file against the Compose Specification's schema (PyPI `check-jsonschema`,
//! its vendored `compose-spec`), the Kubernetes manifests against the API's
//! schemas (PyPI `kubernetes-validate --strict`), and every Bida setting they
//! give (environment and arguments) by Bida itself (`bida config`, which
//! refuses unknown `BIDA_*` variables and bad values). Every file they mount
//! or build from must exist. The images of other projects (postgres,
//! rabbitmq, ...) cannot be pulled here (no registry is reachable), so they
//! are not checked; no container runtime runs here either (README, "Deploy").

mod support;

use serde_norway::Value as Yaml;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::Bida;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read_yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a verifier from PyPI; `.ci/run` installs them.
fn verify(tool: &str, args: &[&str]) {
    let output = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e} (pip install check-jsonschema kubernetes-validate; .ci/run does)"));
    assert!(
        output.status.success(),
        "{tool} {args:?} refused it:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `bida config` with exactly these variables and arguments: Bida's own
/// judgement of the settings a deployment gives it.
fn bida_accepts(env: &BTreeMap<String, String>, args: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_bida"))
        .env_clear()
        .envs(env)
        .arg("config")
        .args(args)
        .output()
        .expect("bida runs");
    assert!(
        output.status.success(),
        "bida refuses {env:?} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `serve` command line as `config` takes it (the same options).
fn config_args(command: &[String]) -> Vec<String> {
    assert_eq!(command.first().map(String::as_str), Some("serve"), "{command:?}");
    command[1..].to_vec()
}

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn the_compose_file_is_valid_and_everything_it_names_exists() {
    let dir = deploy();
    let file = dir.join("docker-compose.yml");
    verify(
        "check-jsonschema",
        &["--builtin-schema", "vendor.compose-spec", file.to_str().unwrap()],
    );
    let compose = read_yaml(&file);
    let services = compose["services"].as_mapping().expect("services");
    let mut built = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    dir.join(source).exists(),
                    "{name} mounts {source}, which is not in deploy/"
                );
            }
        }
        if let Some(build) = service["build"].as_mapping() {
            let context = dir.join(build[&Yaml::from("context")].as_str().unwrap());
            let dockerfile = context.join(build[&Yaml::from("dockerfile")].as_str().unwrap());
            assert!(dockerfile.is_file(), "{name} builds from {}", dockerfile.display());
            built += 1;
        }
    }
    assert_eq!(built, 1, "Bida's image is the one built here");

    let bida = &compose["services"]["bida"];
    let env: BTreeMap<String, String> = bida["environment"]
        .as_mapping()
        .expect("bida's environment")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().unwrap().to_string()))
        .collect();
    assert!(env.keys().all(|k| k.starts_with("BIDA_")), "{env:?}");
    let shown = bida_accepts(&env, &config_args(&strings(&bida["command"])));
    assert!(
        shown.contains("otlp_endpoint = \"http://otel-collector:4318\""),
        "{shown}"
    );
    // The Prometheus it starts scrapes Bida where the stack has it.
    let prometheus = std::fs::read_to_string(dir.join("prometheus/prometheus.yml")).unwrap();
    assert!(prometheus.contains("bida:8080"), "{prometheus}");
}

/// `KEY=value` lines of an env file (comments and blank lines left out).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{l}: not KEY=value"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn the_kubernetes_manifests_are_valid_and_their_settings_are_bidas() {
    let dir = deploy().join("kubernetes");
    let kustomization = read_yaml(&dir.join("kustomization.yaml"));
    let mut resources = strings(&kustomization["resources"]);
    resources.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    assert_eq!(
        resources, on_disk,
        "every manifest is in the kustomization, and only those"
    );
    let paths: Vec<String> = resources.iter().map(|r| dir.join(r).display().to_string()).collect();
    let mut args = vec!["--strict"];
    args.extend(paths.iter().map(String::as_str));
    verify("kubernetes-validate", &args);

    // The settings every replica gets: the ConfigMap's, the Secret's example
    // and the Deployment's own, with its arguments.
    let config = env_file(&dir.join("config.env"));
    let secrets = env_file(&dir.join("secrets.env.example"));
    let deployment = read_yaml(&dir.join("deployment.yaml"));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mut env = config.clone();
    env.extend(secrets);
    for var in container["env"].as_sequence().unwrap() {
        env.insert(var["name"].as_str().unwrap().to_string(), "bida-7d9f-x2".to_string());
    }
    bida_accepts(&env, &config_args(&strings(&container["args"])));

    // What the manifests promise each other.
    let port = config["BIDA_LISTEN"].rsplit(':').next().unwrap().to_string();
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64().map(|p| p.to_string()),
        Some(port)
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    let grace_ms: u64 = config["BIDA_SCHEDULER__SHUTDOWN_GRACE_MS"].parse().unwrap();
    let pod_grace_s = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    // Consumers' deliveries, then tasks' attempts, each up to the grace.
    assert!(
        2 * grace_ms + 5_000 < pod_grace_s * 1000,
        "Kubernetes kills the pod ({pod_grace_s} s) before Bida's grace (twice {grace_ms} ms) and the pre-stop wait are over"
    );

    // Rendered as `kubectl apply -k` would, where kubectl is installed.
    if Command::new("kubectl").arg("version").arg("--client").output().is_ok() {
        let scratch = std::env::temp_dir().join(format!("bida-kustomize-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), scratch.join(entry.file_name())).unwrap();
        }
        std::fs::copy(dir.join("secrets.env.example"), scratch.join("secrets.env")).unwrap();
        let rendered = Command::new("kubectl").arg("kustomize").arg(&scratch).output().unwrap();
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let out = scratch.join("rendered.yaml");
        std::fs::write(&out, &rendered.stdout).unwrap();
        verify("kubernetes-validate", &["--strict", out.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&rendered.stdout).into_owned();
        assert!(
            text.contains("kind: Secret") && text.contains("kind: ConfigMap"),
            "{text}"
        );
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}

#[tokio::test]
async fn the_image_runs_bida_unprivileged_and_asks_it_whether_it_is_ready() {
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let last = |instruction: &str| {
        dockerfile
            .lines()
            .rfind(|l| l.starts_with(instruction))
            .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"))
            .to_string()
    };
    let user = last("USER ");
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
    let json_args = |line: &str| -> Vec<String> {
        let start = line.find('[').unwrap_or_else(|| panic!("{line}: not in exec form"));
        serde_json::from_str(&line[start..]).unwrap()
    };
    let entrypoint = json_args(&last("ENTRYPOINT "));
    assert_eq!(entrypoint, ["bida"]);
    let cmd = json_args(&last("CMD "));
    bida_accepts(&BTreeMap::new(), &config_args(&cmd));
    // The health check is `bida health` on the address CMD listens on.
    let check = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK "))
        .find(|l| l.trim_start().starts_with("CMD "))
        .expect("a HEALTHCHECK with its CMD");
    let check = json_args(check);
    assert_eq!(&check[..2], ["bida", "health"], "{check:?}");
    let listen = &cmd[cmd.iter().position(|a| a == "--listen").unwrap() + 1];
    let port = listen.rsplit(':').next().unwrap();
    assert!(
        check[3].ends_with(&format!(":{port}/readyz")),
        "{check:?} asks another port than {listen}"
    );

    // `bida health` against a real node, and against a port with nothing on it.
    let node = Bida::start("").await;
    let health = |url: String| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_bida"))
            .args(["health", "--timeout", "3", "--url", &url])
            .output()
            .await
            .unwrap()
    };
    let ready = health(format!("{}/readyz", node.url)).await;
    assert!(ready.status.success(), "{}", String::from_utf8_lossy(&ready.stderr));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nothing = format!("http://{}/readyz", closed.local_addr().unwrap());
    drop(closed);
    let refused = health(nothing).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not ready"));
}
