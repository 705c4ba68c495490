//! deploy/kubernetes/ checked without a cluster: every manifest parsed and checked field by
//! field (an Indexed Job with completions = parallelism, names that refer to each other
//! resolve), the Job's and the merge's arguments run through ws-loadgen's own parser with
//! the values Kubernetes substitutes, the ConfigMap's scenario compiled, its JOB_COMPLETION_INDEX
//! turned into a connection offset, and ws-server started with the Deployment's arguments.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use ws_loadgen::cli::{parse_from, Command as Cli};
use ws_loadgen::commands::run::args::build;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// The documents of a YAML file, as JSON values.
fn docs(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .collect()
}

fn kind<'a>(d: &'a [Value], k: &str) -> &'a Value {
    d.iter()
        .find(|v| v["kind"] == k)
        .unwrap_or_else(|| panic!("no {k}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// `$(NAME)` replaced as the kubelet does from the container's env and the Job's index.
fn substitute(s: &str, env: &[(String, String)]) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

#[test]
fn the_load_generator_job_is_an_indexed_job_whose_arguments_parse() {
    let job_docs = docs("loadgen-job.yaml");
    let job = kind(&job_docs, "Job");
    assert_eq!(job["apiVersion"], "batch/v1");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert!(spec["completions"].as_u64().unwrap() >= 2);
    assert_eq!(spec["completions"], spec["parallelism"], "all pods at once");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let sysctls = pod["securityContext"]["sysctls"].as_array().unwrap();
    assert!(sysctls
        .iter()
        .any(|s| s["name"] == "net.ipv4.ip_local_port_range"));
    let c = &pod["containers"][0];
    let mut env: Vec<(String, String)> = vec![
        ("JOB_COMPLETION_INDEX".into(), "1".into()),
        ("POD_NAME".into(), "ws-loadgen-1-x7k2p".into()),
    ];
    for e in c["env"].as_array().unwrap() {
        if let Some(v) = e["value"].as_str() {
            env.push((e["name"].as_str().unwrap().into(), v.into()));
        }
    }
    let pod_name = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .unwrap();
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let args: Vec<String> = strings(&c["args"])
        .iter()
        .map(|a| substitute(a, &env))
        .collect();
    assert!(
        args.iter().all(|a| !a.contains("$(")),
        "unsubstituted: {args:?}"
    );
    let mut words = vec!["ws-loadgen".to_string()];
    words.extend(args.clone());
    let Cli::Run(run) = parse_from(&words).unwrap_or_else(|e| panic!("{e}")).command else {
        panic!("not a run: {args:?}");
    };
    assert_eq!(
        run.script.as_deref(),
        Some(Path::new("/scenario/chat.toml"))
    );
    assert!(run.start_at.is_some());
    assert_eq!(run.host_label.as_deref(), Some("ws-loadgen-1-x7k2p"));
    assert_eq!(
        run.json.as_deref(),
        Some(Path::new("/reports/report-1.json"))
    );
    assert!(run.metrics_listen.is_some());
    assert!(run.conn_offset.is_none(), "the index gives the offset");
    // Mounts refer to volumes that exist; the claim and the ConfigMap are declared.
    let vols = pod["volumes"].as_array().unwrap();
    for m in c["volumeMounts"].as_array().unwrap() {
        assert!(vols.iter().any(|v| v["name"] == m["name"]), "{m}");
    }
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"] == "/scenario"));
    assert!(mounts.iter().any(|m| m["mountPath"] == "/reports"));
    let pvc = kind(&job_docs, "PersistentVolumeClaim");
    let claim = vols.iter().find(|v| v["name"] == "reports").unwrap();
    assert_eq!(
        claim["persistentVolumeClaim"]["claimName"],
        pvc["metadata"]["name"]
    );
    assert_eq!(pvc["spec"]["accessModes"][0], "ReadWriteMany");
    let cm_docs = docs("scenario.yaml");
    let cm = kind(&cm_docs, "ConfigMap");
    let cm_vol = vols.iter().find(|v| v["name"] == "scenario").unwrap();
    assert_eq!(cm_vol["configMap"]["name"], cm["metadata"]["name"]);

    // The scenario compiles (its in-cluster host swapped for one that resolves here), and
    // pod 1 numbers its connections from 1 × connections.
    let tmp = common::temp_path("k8s-scenario");
    std::fs::create_dir_all(&tmp).unwrap();
    let toml = cm["data"]["chat.toml"].as_str().unwrap();
    assert!(toml.contains("ws-server.default.svc.cluster.local:9001"));
    std::fs::write(
        tmp.join("chat.toml"),
        toml.replace("ws-server.default.svc.cluster.local", "127.0.0.1"),
    )
    .unwrap();
    std::fs::write(
        tmp.join("users.csv"),
        cm["data"]["users.csv"].as_str().unwrap(),
    )
    .unwrap();
    let mut local = words.clone();
    let i = local
        .iter()
        .position(|w| w == "/scenario/chat.toml")
        .unwrap();
    local[i] = tmp.join("chat.toml").display().to_string();
    // The offset comes from the pod's index.
    std::env::set_var("JOB_COMPLETION_INDEX", "1");
    let Cli::Run(run) = parse_from(&local).unwrap().command else {
        unreachable!()
    };
    let mut run = *run;
    run.start_at = None; // no waiting here
    let cfg = build(&run, (1 << 20, 1 << 20)).unwrap_or_else(|e| panic!("{e}"));
    std::env::remove_var("JOB_COMPLETION_INDEX");
    assert_eq!(cfg.plan.max_target(), 10_000);
    assert_eq!(cfg.conn_offset, 10_000);
    assert_eq!(cfg.host_label, "ws-loadgen-1-x7k2p");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn the_merge_job_merges_every_pods_report_with_thresholds_that_exist() {
    let d = docs("merge-job.yaml");
    let job = kind(&d, "Job");
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(strings(&c["command"]), ["/bin/sh", "-c"]);
    let line = strings(&c["args"]).join(" ");
    let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], "exec");
    assert!(line.contains("/reports/report-*.json"), "{line}");
    // The glob as the shell expands it for three pods.
    let mut argv = vec!["ws-loadgen".to_string()];
    for w in &words[2..] {
        if w == "/reports/report-*.json" {
            argv.extend((0..3).map(|i| format!("/reports/report-{i}.json")));
        } else {
            argv.push(w.clone());
        }
    }
    assert_eq!(words[1], "ws-loadgen");
    let Cli::Merge(m) = parse_from(&argv).unwrap_or_else(|e| panic!("{e}")).command else {
        panic!("not a merge: {line}");
    };
    assert_eq!(m.reports.len(), 3);
    assert!(m.html.is_some() && m.json.is_some());
    // Its named thresholds are rows of the scenario the pods run.
    let cm = docs("scenario.yaml");
    let toml = kind(&cm, "ConfigMap")["data"]["chat.toml"]
        .as_str()
        .unwrap()
        .to_string();
    for l in &m.thresholds.max_p99 {
        let row = l.row.as_deref().unwrap();
        assert!(
            toml.contains(&format!("name = \"{row}\"")),
            "{row} is not in the scenario"
        );
    }
    let vol = &job["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(
        vol["persistentVolumeClaim"]["claimName"],
        "ws-loadgen-reports"
    );
}

#[test]
fn the_server_deployment_starts_with_its_arguments() {
    let d = docs("server.yaml");
    let dep = kind(&d, "Deployment");
    let svc = kind(&d, "Service");
    let pod = &dep["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["app"],
        svc["spec"]["selector"]["app"]
    );
    assert_eq!(
        dep["spec"]["selector"]["matchLabels"],
        pod["metadata"]["labels"]
    );
    let c = &pod["spec"]["containers"][0];
    let ports = c["ports"].as_array().unwrap();
    for p in svc["spec"]["ports"].as_array().unwrap() {
        assert!(ports.iter().any(|q| q["name"] == p["targetPort"]), "{p}");
    }
    let sysctls: Vec<String> = pod["spec"]["securityContext"]["sysctls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert!(sysctls.contains(&"net.core.somaxconn".to_string()));
    let args = strings(&c["args"]);
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| args[i + 1].clone())
        .unwrap();
    assert!(ports
        .iter()
        .any(|p| listen.ends_with(&format!(":{}", p["containerPort"]))));
    // The real server takes these arguments: started in a private network namespace
    // (nothing binds on the host), it listens where the manifest says.
    let has_unshare = Command::new("unshare").arg("--version").output().is_ok();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !has_unshare {
        println!("skipped starting ws-server: needs root and unshare");
        return;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "--"])
        .arg(common::server_bin())
        .args(&args)
        .args(["--cores", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    let mut second = String::new();
    use std::io::BufRead;
    let _ = out.read_line(&mut first);
    let _ = out.read_line(&mut second);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(first.trim(), format!("listening on {listen}"));
    assert_eq!(second.trim(), "admin on 0.0.0.0:9002");
}
