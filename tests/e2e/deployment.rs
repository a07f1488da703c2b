//! The deployment files, validated as far as this machine can without Docker or a cluster:
//! `docker-compose config` (Debian's `docker-compose`, installed by tests/run.sh) on the compose
//! file, structural checks of the Kubernetes manifests (parsed by PyYAML, which
//! `docker-compose` depends on), and every `HUNTER_*` variable in them being one the binary
//! reads (`hunter_core::config::ENV_VARS`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use hunter_core::config::ENV_VARS;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `HUNTER_*` names in a text (whole words).
fn hunter_vars(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut at = 0;
    while let Some(found) = text[at..].find("HUNTER_") {
        let start = at + found;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_uppercase()
                || bytes[end] == b'_'
                || bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        // A bare `HUNTER_` (as in "HUNTER_* settings") names no variable.
        if word_start && end > start + "HUNTER_".len() {
            out.insert(text[start..end].to_owned());
        }
        at = end;
    }
    out
}

/// The passwords and the API token `.env` must set: docker-compose refuses to start without them,
/// and `.env.example` leaves them empty (no default password or working token anywhere).
const REQUIRED_PASSWORDS: &[&str] = &[
    "HUNTER_API_TOKEN",
    "HUNTER_CLICKHOUSE_PASSWORD",
    "HUNTER_CLICKHOUSE_READER_PASSWORD",
    "CLICKHOUSE_ADMIN_PASSWORD",
    "CLICKHOUSE_ANALYST_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
];

/// `.env.example` with each required password set to a fresh random value (`skip` left empty),
/// written to a temporary file; the values, by name.
fn env_file(skip: Option<&str>) -> (tempfile::NamedTempFile, BTreeMap<String, String>) {
    let mut text = std::fs::read_to_string(repo().join(".env.example")).unwrap();
    let mut values = BTreeMap::new();
    for name in REQUIRED_PASSWORDS.iter().filter(|n| Some(**n) != skip) {
        let value = format!("test-{}", uuid::Uuid::new_v4().simple());
        text.push_str(&format!("{name}={value}\n"));
        values.insert((*name).to_owned(), value);
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    (file, values)
}

fn docker_compose_with(env_file: &Path, args: &[&str]) -> std::process::Output {
    Command::new("docker-compose")
        .arg("--env-file")
        .arg(env_file)
        .args(["--file", "docker-compose.yml"])
        .args(args)
        .current_dir(repo())
        .output()
        .expect("docker-compose runs (apt-get install --no-install-recommends docker-compose; tests/run.sh does)")
}

fn docker_compose(args: &[&str]) -> String {
    let (env, _) = env_file(None);
    let output = docker_compose_with(env.path(), args);
    assert!(
        output.status.success(),
        "docker-compose {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn compose_file_is_valid_and_runs_every_role_with_healthchecks() {
    docker_compose(&["config", "--quiet"]);
    let services: BTreeSet<String> = docker_compose(&["--profile", "demo", "config", "--services"])
        .lines()
        .map(str::to_owned)
        .collect();
    for service in [
        "kafka",
        "schema-registry",
        "clickhouse",
        "prometheus",
        "grafana",
        "hunter-migrate",
        "hunter-source",
        "hunter-processor",
        "hunter-sink",
        "hunter-notify",
        "hunter-api",
        "simulator",
    ] {
        assert!(
            services.contains(service),
            "{service} missing: {services:?}"
        );
    }
    // The resolved file: long-running services restart and have a healthcheck; the one-shots
    // do not restart; the roles wait for migrate to succeed.
    let resolved = docker_compose(&["--profile", "demo", "config"]);
    let blocks = service_blocks(&resolved);
    assert_eq!(
        blocks.keys().cloned().collect::<BTreeSet<_>>(),
        services,
        "services parsed from the resolved file"
    );
    for (name, block) in &blocks {
        let one_shot = ["hunter-migrate", "demo-login", "hunter-doctor"].contains(&name.as_str());
        if one_shot {
            assert!(
                block.contains("restart: 'no'")
                    || block.contains("restart: \"no\"")
                    || block.contains("restart: no"),
                "{name}:\n{block}"
            );
        } else {
            assert!(
                block.contains("restart: unless-stopped"),
                "{name}: restart policy\n{block}"
            );
            assert!(
                block.contains("healthcheck:") && block.contains("test:"),
                "{name}: healthcheck\n{block}"
            );
        }
        if [
            "hunter-source",
            "hunter-processor",
            "hunter-sink",
            "hunter-notify",
            "hunter-api",
        ]
        .contains(&name.as_str())
        {
            assert!(
                block.contains("hunter-migrate:")
                    && block.contains("service_completed_successfully"),
                "{name}: waits for migrate\n{block}"
            );
        }
    }
    // The simulator and its sign-in run only in the demo profile.
    for name in ["simulator", "demo-login"] {
        let block = &blocks[name];
        assert!(
            block.contains("profiles:") && block.contains("- demo"),
            "{name}:\n{block}"
        );
    }
    let grafana = &blocks["grafana"];
    assert!(
        grafana.contains("grafana-clickhouse-datasource"),
        "{grafana}"
    );
    assert!(grafana.contains("/etc/grafana/provisioning"), "{grafana}");
    assert!(
        blocks["prometheus"].contains("/etc/prometheus/rules"),
        "{}",
        blocks["prometheus"]
    );
}

/// `services:` of a resolved compose file, split per service (two-space indentation).
fn service_blocks(resolved: &str) -> BTreeMap<String, String> {
    let mut blocks = BTreeMap::new();
    let mut in_services = false;
    let mut current: Option<(String, String)> = None;
    for line in resolved.lines() {
        if !line.starts_with(' ') {
            in_services = line.starts_with("services:");
            if let Some((name, block)) = current.take() {
                blocks.insert(name, block);
            }
            continue;
        }
        if !in_services {
            continue;
        }
        if line.starts_with("  ") && !line.starts_with("   ") {
            if let Some((name, block)) = current.take() {
                blocks.insert(name, block);
            }
            current = Some((line.trim().trim_end_matches(':').to_owned(), String::new()));
        } else if let Some((_, block)) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    if let Some((name, block)) = current {
        blocks.insert(name, block);
    }
    blocks
}

#[test]
fn deployment_files_use_only_settings_the_binary_reads() {
    let known: BTreeSet<&str> = ENV_VARS.iter().copied().collect();
    let mut files = vec![
        repo().join("docker-compose.yml"),
        repo().join(".env.example"),
    ];
    for entry in std::fs::read_dir(repo().join("deploy/k8s"))
        .unwrap()
        .flatten()
    {
        files.push(entry.path());
    }
    files.push(repo().join("deploy/Dockerfile"));
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for name in hunter_vars(&text) {
            assert!(
                known.contains(name.as_str()),
                "{}: {name} is not a setting hunter reads (pipeline/core/src/config/vars.rs SETTINGS)",
                file.display()
            );
        }
    }
    // .env.example documents every one of them.
    let example = hunter_vars(&std::fs::read_to_string(repo().join(".env.example")).unwrap());
    for name in ENV_VARS {
        assert!(example.contains(*name), ".env.example lacks {name}");
    }
    // docker-compose passes every setting but the config file to the roles.
    let compose = hunter_vars(&std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap());
    for name in ENV_VARS.iter().filter(|n| **n != "HUNTER_CONFIG") {
        assert!(
            compose.contains(*name),
            "docker-compose.yml does not pass {name}"
        );
    }
}

/// Every document of every manifest, as JSON.
fn manifests() -> BTreeMap<String, Vec<Value>> {
    let dir = repo().join("deploy/k8s");
    let script = "import json, sys, yaml\nprint(json.dumps({f: list(yaml.safe_load_all(open(f))) for f in sys.argv[1:]}))";
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&files)
        .current_dir(&dir)
        .output()
        .expect("python3 runs (with PyYAML: python3-yaml, a dependency of docker-compose)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: BTreeMap<String, Vec<Value>> = serde_json::from_slice(&output.stdout).unwrap();
    parsed
        .into_iter()
        .map(|(file, docs)| (file, docs.into_iter().filter(|d| !d.is_null()).collect()))
        .collect()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[test]
fn kubernetes_manifests_are_complete_and_consistent() {
    let manifests = manifests();
    let kustomization = &manifests["kustomization.yaml"][0];
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    // The Secret is the operator's to create (docs/security.md): its example is never applied,
    // so re-applying cannot deploy placeholder tokens or overwrite the real Secret.
    let present: BTreeSet<&str> = manifests
        .keys()
        .map(String::as_str)
        .filter(|f| *f != "kustomization.yaml" && *f != "secret.example.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization resources vs files");
    assert!(
        !listed.contains("secret.example.yaml"),
        "kustomization.yaml deploys the example Secret"
    );

    let docs: Vec<&Value> = manifests
        .iter()
        .filter(|(f, _)| *f != "kustomization.yaml")
        .flat_map(|(_, d)| d)
        .collect();
    let named = |kind: &str| -> BTreeMap<String, &Value> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .map(|d| (d["metadata"]["name"].as_str().unwrap().to_owned(), *d))
            .collect()
    };
    for doc in &docs {
        assert!(doc["apiVersion"].is_string(), "{doc}");
        assert!(doc["metadata"]["name"].is_string(), "{doc}");
    }
    let config_maps = named("ConfigMap");
    let secrets = named("Secret");
    let deployments = named("Deployment");
    let known: BTreeSet<&str> = ENV_VARS.iter().copied().collect();
    for data in config_maps
        .values()
        .map(|c| &c["data"])
        .chain(secrets.values().map(|s| &s["stringData"]))
    {
        for key in data.as_object().unwrap().keys() {
            assert!(
                known.contains(key.as_str()),
                "{key} is not a hunter setting"
            );
        }
    }

    let mut roles = BTreeSet::new();
    let mut pod_specs: Vec<(&str, &Value)> = deployments
        .iter()
        .map(|(name, d)| (name.as_str(), &d["spec"]["template"]))
        .collect();
    let job = &named("Job")["hunter-migrate"];
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["migrate"])
    );
    pod_specs.push(("hunter-migrate", &job["spec"]["template"]));
    for (name, template) in &pod_specs {
        let spec = &template["spec"];
        assert_eq!(
            spec["securityContext"]["runAsNonRoot"], true,
            "{name}: non-root"
        );
        let container = &spec["containers"][0];
        assert_eq!(
            container["image"], "hunter",
            "{name}: one image for every role"
        );
        for source in container["envFrom"].as_array().unwrap() {
            if let Some(map) = source["configMapRef"]["name"].as_str() {
                assert!(config_maps.contains_key(map), "{name}: ConfigMap {map}");
            }
            if let Some(secret) = source["secretRef"]["name"].as_str() {
                assert!(secrets.contains_key(secret), "{name}: Secret {secret}");
            }
        }
    }
    for (name, deployment) in &deployments {
        let spec = &deployment["spec"];
        let template = &spec["template"];
        assert!(
            labels_match(
                &spec["selector"]["matchLabels"],
                &template["metadata"]["labels"]
            ),
            "{name}: selector does not match the pod labels"
        );
        let container = &template["spec"]["containers"][0];
        let args = container["args"].as_array().unwrap();
        assert_eq!(args[0], "run", "{name}");
        let role = args[1].as_str().unwrap();
        roles.insert(role.to_owned());
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{name}"
        );
        let readiness = container["readinessProbe"]["httpGet"]["path"]
            .as_str()
            .unwrap();
        assert_eq!(
            readiness,
            if role == "api" { "/readyz" } else { "/healthz" },
            "{name}"
        );
        let port = container["ports"][0]["name"].as_str().unwrap();
        assert_eq!(
            container["livenessProbe"]["httpGet"]["port"], port,
            "{name}"
        );
        assert_eq!(
            template["metadata"]["annotations"]["prometheus.io/scrape"], "true",
            "{name}"
        );
    }
    assert_eq!(
        roles,
        BTreeSet::from(["source", "process", "sink", "notify", "api"].map(str::to_owned))
    );

    let api = &deployments["hunter-api"];
    let service = &named("Service")["hunter-api"];
    assert!(labels_match(
        &service["spec"]["selector"],
        &api["spec"]["template"]["metadata"]["labels"]
    ));
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        api["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]
    );
    let monitor = &named("PodMonitor")["hunter"];
    for (name, deployment) in &deployments {
        assert!(
            labels_match(
                &monitor["spec"]["selector"]["matchLabels"],
                &deployment["spec"]["template"]["metadata"]["labels"]
            ),
            "the PodMonitor does not select {name}"
        );
    }
    let source = &deployments["hunter-source"];
    let claim =
        source["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
            .as_str()
            .unwrap();
    assert!(
        named("PersistentVolumeClaim").contains_key(claim),
        "token cache claim {claim}"
    );
}

// --- hardening and secrets (issue 13 item 5; docs/clickhouse.md) ---

/// The resolved compose file (every profile's services), as JSON.
fn resolved_compose(env_file: &Path) -> Value {
    let output = docker_compose_with(
        env_file,
        &["--profile", "demo", "--profile", "tools", "config"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    python
        .stdin
        .take()
        .unwrap()
        .write_all(&output.stdout)
        .unwrap();
    let parsed = python.wait_with_output().unwrap();
    assert!(parsed.status.success());
    serde_json::from_slice(&parsed.stdout).unwrap()
}

/// A setting name that holds a secret.
fn is_secret(name: &str) -> bool {
    ["PASSWORD", "TOKEN", "SECRET"]
        .iter()
        .any(|word| name.contains(word))
        && name != "HUNTER_TOKEN_CACHE"
}

/// What each Hunter role must not be given (it does not use them).
const FORBIDDEN_SECRETS: &[(&str, &[&str])] = &[
    (
        "api",
        &[
            "HUNTER_CLICKHOUSE_PASSWORD",
            "HUNTER_PARTNER_CENTER_CLIENT_SECRET",
        ],
    ),
    (
        "sink",
        &[
            "HUNTER_PARTNER_CENTER_WEBHOOK_SECRET",
            "HUNTER_API_TOKEN",
            "HUNTER_API_READ_TOKEN",
            "HUNTER_API_TOKENS",
            "HUNTER_CLICKHOUSE_READER_PASSWORD",
            "HUNTER_PARTNER_CENTER_CLIENT_SECRET",
        ],
    ),
    (
        "migrate",
        &[
            "HUNTER_PARTNER_CENTER_WEBHOOK_SECRET",
            "HUNTER_API_TOKEN",
            "HUNTER_API_READ_TOKEN",
            "HUNTER_API_TOKENS",
            "HUNTER_CLICKHOUSE_READER_PASSWORD",
            "HUNTER_PARTNER_CENTER_CLIENT_SECRET",
        ],
    ),
    (
        "source",
        &[
            "HUNTER_PARTNER_CENTER_WEBHOOK_SECRET",
            "HUNTER_API_TOKEN",
            "HUNTER_API_READ_TOKEN",
            "HUNTER_API_TOKENS",
            "HUNTER_CLICKHOUSE_PASSWORD",
            "HUNTER_CLICKHOUSE_READER_PASSWORD",
        ],
    ),
    (
        "notify",
        &[
            "HUNTER_API_TOKEN",
            "HUNTER_API_READ_TOKEN",
            "HUNTER_API_TOKENS",
            "HUNTER_CLICKHOUSE_READER_PASSWORD",
            "HUNTER_PARTNER_CENTER_CLIENT_SECRET",
            "HUNTER_PARTNER_CENTER_WEBHOOK_SECRET",
        ],
    ),
    (
        "processor",
        &[
            "HUNTER_PARTNER_CENTER_WEBHOOK_SECRET",
            "HUNTER_API_TOKEN",
            "HUNTER_API_READ_TOKEN",
            "HUNTER_API_TOKENS",
            "HUNTER_CLICKHOUSE_PASSWORD",
            "HUNTER_CLICKHOUSE_READER_PASSWORD",
            "HUNTER_PARTNER_CENTER_CLIENT_SECRET",
        ],
    ),
];

#[test]
fn compose_requires_every_password_and_defaults_none() {
    // .env.example leaves each password empty, and compose refuses to run without each one,
    // naming it.
    let example = std::fs::read_to_string(repo().join(".env.example")).unwrap();
    for name in REQUIRED_PASSWORDS {
        let line = example
            .lines()
            .find(|line| line.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!(".env.example lacks {name}"));
        assert_eq!(
            line,
            format!("{name}="),
            ".env.example must not ship a password"
        );
        let (env, _) = env_file(Some(name));
        let output = docker_compose_with(env.path(), &["config", "--quiet"]);
        assert!(
            !output.status.success(),
            "docker-compose config ran without {name}"
        );
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(
            error.contains(name),
            "the error does not name {name}: {error}"
        );
    }
    // No variable holding a secret has a default value in the compose file.
    let compose = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    for (at, _) in compose.match_indices("${") {
        let reference = &compose[at + 2..at + compose[at..].find('}').unwrap()];
        let name: String = reference
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if let Some(default) = reference[name.len()..].strip_prefix(":-") {
            assert!(
                !is_secret(&name) || default.is_empty(),
                "${{{reference}}}: a secret with a default value"
            );
        }
    }
    // Every secret a service is given is exactly what .env says.
    let (env, values) = env_file(None);
    let resolved = resolved_compose(env.path());
    let services = resolved["services"].as_object().unwrap();
    let grafana = &services["grafana"]["environment"];
    assert_eq!(
        grafana["GF_SECURITY_ADMIN_PASSWORD"],
        values["GRAFANA_ADMIN_PASSWORD"].as_str(),
        "Grafana's admin password is the one from .env"
    );
    let clickhouse = &services["clickhouse"]["environment"];
    assert_eq!(
        clickhouse["CLICKHOUSE_PASSWORD"],
        values["CLICKHOUSE_ADMIN_PASSWORD"].as_str()
    );
    for (service, definition) in services {
        for (name, value) in definition["environment"].as_object().into_iter().flatten() {
            if let Some(expected) = values.get(name) {
                assert_eq!(value, expected.as_str(), "{service}: {name}");
            }
        }
    }
    // The bundled ClickHouse defines Hunter's users from the same file the tests run on 18.16.
    let volumes = services["clickhouse"]["volumes"].to_string();
    assert!(
        volumes.contains("deploy/clickhouse/users.d/hunter.xml"),
        "{volumes}"
    );
}

#[test]
fn compose_hardens_hunters_services_and_gives_each_only_its_secrets() {
    let (env, _) = env_file(None);
    let resolved = resolved_compose(env.path());
    let services = resolved["services"].as_object().unwrap();
    let hunters: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(_, s)| s["image"] == "hunter:local")
        .collect();
    assert!(hunters.len() >= 7, "{:?}", services.keys());
    for (name, service) in &hunters {
        assert_eq!(service["read_only"], true, "{name}: read_only");
        assert!(
            service["cap_drop"]
                .as_array()
                .is_some_and(|c| c.contains(&"ALL".into())),
            "{name}: cap_drop ALL"
        );
        assert!(
            service["security_opt"]
                .as_array()
                .is_some_and(|o| o.contains(&"no-new-privileges:true".into())),
            "{name}: no-new-privileges"
        );
        assert!(
            service["mem_limit"].is_string() || service["mem_limit"].is_number(),
            "{name}: mem_limit"
        );
        assert!(
            service["tmpfs"].to_string().contains("/tmp"),
            "{name}: a tmpfs where it may write"
        );
    }
    for (role, forbidden) in FORBIDDEN_SECRETS {
        let service = format!(
            "hunter-{}",
            if *role == "processor" {
                "processor"
            } else {
                role
            }
        );
        let env = &services[&service]["environment"];
        for name in *forbidden {
            assert!(env.get(*name).is_none(), "{service} is given {name}");
        }
    }
    // And what each needs.
    for (service, name) in [
        ("hunter-api", "HUNTER_API_TOKEN"),
        ("hunter-api", "HUNTER_CLICKHOUSE_READER_PASSWORD"),
        ("hunter-api", "HUNTER_PARTNER_CENTER_WEBHOOK_SECRET"),
        ("hunter-api", "HUNTER_PARTNER_CENTER_WEBHOOK_URL"),
        ("hunter-sink", "HUNTER_CLICKHOUSE_PASSWORD"),
        ("hunter-notify", "HUNTER_CLICKHOUSE_PASSWORD"),
        ("hunter-notify", "HUNTER_NOTIFY_TARGETS"),
        ("hunter-migrate", "HUNTER_CLICKHOUSE_PASSWORD"),
        ("hunter-source", "HUNTER_PARTNER_CENTER_CLIENT_SECRET"),
    ] {
        assert!(
            services[service]["environment"].get(name).is_some(),
            "{service} lacks {name}"
        );
    }
    // Grafana reads ClickHouse as the analysts' read-only user, never as one of Hunter's.
    let grafana = services["grafana"]["environment"].as_object().unwrap();
    assert_eq!(grafana["CLICKHOUSE_ANALYST_USER"], "analyst");
    assert!(!grafana.contains_key("HUNTER_CLICKHOUSE_PASSWORD"));
    let datasource =
        std::fs::read_to_string(repo().join("deploy/grafana/provisioning/datasources/hunter.yml"))
            .unwrap();
    assert!(
        datasource.contains("${CLICKHOUSE_ANALYST_PASSWORD}"),
        "{datasource}"
    );
}

#[test]
fn kubernetes_pods_are_hardened_and_get_only_their_secrets() {
    let manifests = manifests();
    let docs: Vec<&Value> = manifests
        .iter()
        .filter(|(f, _)| *f != "kustomization.yaml")
        .flat_map(|(_, d)| d)
        .collect();
    let secrets: BTreeMap<&str, &Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Secret")
        .map(|d| (d["metadata"]["name"].as_str().unwrap(), &d["stringData"]))
        .collect();
    let policies: Vec<&Value> = docs
        .iter()
        .copied()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    assert!(!policies.is_empty(), "no NetworkPolicy");
    let pods: Vec<(String, &Value)> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "Job")
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap().to_owned(),
                &d["spec"]["template"],
            )
        })
        .collect();
    assert_eq!(pods.len(), 6, "five roles and the migrate Job");
    for (name, template) in &pods {
        let spec = &template["spec"];
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}: seccomp"
        );
        assert_eq!(
            spec["automountServiceAccountToken"], false,
            "{name}: no SA token"
        );
        let container = &spec["containers"][0];
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert!(
            security["capabilities"]["drop"]
                .as_array()
                .is_some_and(|d| d.contains(&"ALL".into())),
            "{name}: capabilities"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{name}: memory limit"
        );
        assert!(
            container["resources"]["requests"].is_object(),
            "{name}: requests"
        );
        // Ingress and egress policies select every pod.
        let labels = &template["metadata"]["labels"];
        for kind in ["Ingress", "Egress"] {
            assert!(
                policies.iter().any(|p| {
                    p["spec"]["policyTypes"]
                        .as_array()
                        .is_some_and(|t| t.contains(&kind.into()))
                        && labels_match(&p["spec"]["podSelector"]["matchLabels"], labels)
                }),
                "{name}: no {kind} NetworkPolicy selects it"
            );
        }
        // Only its own secrets.
        let role = name.trim_start_matches("hunter-");
        let visible: BTreeSet<String> = container["envFrom"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|source| source["secretRef"]["name"].as_str())
            .flat_map(|secret| {
                secrets
                    .get(secret)
                    .unwrap_or_else(|| {
                        panic!("{name}: Secret {secret} has no manifest showing its keys (secret.example.yaml)")
                    })
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        let forbidden = FORBIDDEN_SECRETS
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, f)| *f)
            .unwrap_or_else(|| panic!("no secret rule for {role}"));
        for key in forbidden {
            assert!(!visible.contains(*key), "{name} is given {key}");
        }
    }
    // A pinned image, never `latest`.
    let kustomization = &manifests["kustomization.yaml"][0];
    for image in kustomization["images"].as_array().unwrap() {
        let tag = image["newTag"].as_str().unwrap_or_default();
        assert!(!tag.is_empty() && tag != "latest", "image tag {tag:?}");
    }
}
