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

fn docker_compose(args: &[&str]) -> String {
    // .env.example as a user copies it to .env, with the one value it leaves to them (no
    // working token ships: docs/security.md).
    let env_file = tempfile::NamedTempFile::new().unwrap();
    let example = std::fs::read_to_string(repo().join(".env.example")).unwrap();
    let filled: String = example
        .lines()
        .map(|line| {
            if line == "HUNTER_API_TOKEN=" {
                format!("HUNTER_API_TOKEN={}\n", uuid::Uuid::new_v4().simple())
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(env_file.path(), filled).unwrap();
    let output = Command::new("docker-compose")
        .arg("--env-file")
        .arg(env_file.path())
        .args(["--file", "docker-compose.yml"])
        .args(args)
        .current_dir(repo())
        .output()
        .expect("docker-compose runs (apt-get install --no-install-recommends docker-compose; tests/run.sh does)");
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
        let one_shot = name == "hunter-migrate" || name == "demo-login";
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
                "{}: {name} is not a setting hunter reads (pipeline/core/src/config.rs ENV_VARS)",
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
        BTreeSet::from(["source", "process", "sink", "api"].map(str::to_owned))
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
