//! The files in deploy/ checked against the daemon itself: every TOML there
//! loads with warmpoold's own config loader, the example documents every
//! option the loader knows, and the Grafana dashboard and the Prometheus
//! rules name only metrics a running warmpoold exposes on /metrics, and
//! only the labels and label values its series have (their promtool tests
//! only its histograms' bucket bounds); the
//! systemd unit and the example config agree on how a dynamic user gets the
//! cloud's credentials; and a dashboard panel in seconds plots nothing else
//! without giving it its own unit; the Kubernetes config's store cache fits
//! well under the pod's memory limit; systemd and Kubernetes wait out the
//! shutdown grace and the final flush before killing warmpoold; the
//! container image holds the system's CA certificates; the configs
//! systemd and Kubernetes run drive a real cloud (OpenStack), with the
//! credentials handed over where the config reads them, and refuse to
//! start until an operator fills in their placeholders; the README's
//! procedure for the store commands under Kubernetes names the
//! StatefulSet, its PVC, user and image, and the config's data_dir; and
//! Kubernetes pulls warmpoold's image only when the node lacks it; a
//! container's store at the default data_dir lands in its volume; the
//! testbed README's config keeps a store apart from the embedded demo's.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{deploy_dir, eventually, exposed_names, families, warmpool_identifiers, Daemon};
use warmpool_server::config::{CloudConfig, Config, MAX_SHUTDOWN_GRACE, SHUTDOWN_FLUSH_MARGIN};
use warmpool_server::shutdown::CUT_PATIENCE;

/// Files under `dir` (recursively) whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether a config file's text sets a placeholder (a string value
/// `"<...>"`) for an operator to fill in.
fn has_placeholders(text: &str) -> bool {
    text.lines()
        .any(|l| !l.trim_start().starts_with('#') && l.contains("\"<"))
}

/// A config file's text with every placeholder filled in, as an operator
/// would.
fn filled(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("\"<") {
        let Some(len) = rest[start..].find(">\"") else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str("\"filled-in\"");
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// The config file at `path` as warmpoold runs it once its placeholders
/// are filled in.
fn load_filled(path: &Path) -> Config {
    Config::parse(&filled(&read(path))).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_toml_in_deploy_loads_with_the_daemons_config_loader() {
    let tomls = files_ending(&deploy_dir(), ".toml");
    let names: Vec<_> = tomls
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"warmpoold.example.toml".to_owned()),
        "no example config among {names:?}"
    );
    assert!(
        tomls.len() >= 2,
        "expected the example and the Kubernetes config: {names:?}"
    );
    for path in &tomls {
        let text = read(path);
        // A config with placeholders refuses to start, naming the first,
        // until they are filled in.
        let config = if has_placeholders(&text) {
            let refused = Config::load(path)
                .expect_err("a config with placeholders loads")
                .to_string();
            assert!(
                refused.contains(&path.display().to_string()) && refused.contains("placeholder"),
                "{refused}"
            );
            load_filled(path)
        } else {
            Config::load(path).unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(!config.pools.is_empty(), "{}: no pools", path.display());
        assert_ne!(config.listen, config.metrics_listen, "{}", path.display());
    }
}

/// The fields a table of the config accepts, read from the loader's own
/// "unknown field" error for a key it cannot know (serde lists the expected
/// ones), so an option added to the loader is found without editing this test.
fn accepted_keys(table_prefix: &str) -> BTreeSet<String> {
    let text = format!("{table_prefix}__no_such_option__ = 1\n");
    let err = Config::parse(&text)
        .expect_err("an unknown key is an error")
        .to_string();
    assert!(
        err.contains("unknown field `__no_such_option__`"),
        "unexpected error for {text:?}: {err}"
    );
    let expected = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("no list of expected fields in: {err}"))
        .1;
    // A nested table's error goes on to say where: "... in `a.b`".
    let expected = expected
        .split_once(" in `")
        .map_or(expected, |(list, _)| list);
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_example_config_documents_every_option() {
    let example = read(&deploy_dir().join("warmpoold.example.toml"));
    let lines: Vec<&str> = example.lines().collect();
    let tables = [
        ("top level", String::new()),
        ("[manager]", "[manager]\n".to_owned()),
        (
            "[cloud] (embedded)",
            "[cloud]\nkind = \"embedded\"\n".to_owned(),
        ),
        (
            "[cloud] (openstack)",
            "[cloud]\nkind = \"openstack\"\n".to_owned(),
        ),
        (
            "[cloud.availability_zones.<az>]",
            "[cloud]\nkind = \"openstack\"\n[cloud.availability_zones.az1]\n".to_owned(),
        ),
        ("[[pools]]", "[[pools]]\n".to_owned()),
        ("[[api_tokens]]", "[[api_tokens]]\n".to_owned()),
        ("[tls]", "[tls]\n".to_owned()),
    ];
    let mut checked = 0;
    for (table, prefix) in tables {
        let keys = accepted_keys(&prefix);
        assert!(!keys.is_empty(), "{table}: no keys found");
        for key in keys {
            // Set, or shown commented out, with a comment line right above
            // (possibly above a run of such keys).
            // Tables (`[manager]`, `[[pools]]`, `[cloud.availability_zones.az1]`)
            // by their header.
            let at = lines.iter().position(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                let header = l
                    .trim_start_matches('[')
                    .split_once(']')
                    .map(|(path, _)| path.split('.').any(|part| part == key));
                l.starts_with('[') && header == Some(true)
                    || l.strip_prefix(key.as_str())
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            let at = at.unwrap_or_else(|| panic!("{table}: option `{key}` is not in the example"));
            assert!(
                at > 0 && lines[at - 1].trim_start().starts_with('#'),
                "{table}: option `{key}` has no comment above it"
            );
            checked += 1;
        }
    }
    // The tables themselves are shown too.
    for header in ["[manager]", "[cloud]", "[[pools]]"] {
        assert!(example.contains(header), "the example lacks {header}");
    }
    assert!(checked >= 20, "only {checked} options found");
}

/// An operator who uncomments the example's `[[api_tokens]]` block as it
/// stands gets no working token: its `sha256` is a placeholder, refused by
/// its key. It was the SHA-256 of "test", so the block as shown let anyone
/// in with the token "test".
#[test]
fn the_examples_api_token_uncommented_is_refused_as_a_placeholder() {
    let example = read(&deploy_dir().join("warmpoold.example.toml"));
    let lines: Vec<&str> = example.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "# [[api_tokens]]")
        .expect("the example shows an [[api_tokens]] block");
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l.trim().is_empty())
            .unwrap_or(lines.len() - start);
    // The example's other placeholders filled in, as an operator would; the
    // block (up to the first blank line) uncommented as it stands: its
    // settings are its lines of the form `# key = value`.
    let mut uncommented: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if (start..end).contains(&i) {
                (*l).to_owned()
            } else {
                filled(l)
            }
        })
        .collect();
    let mut keys = Vec::new();
    for line in &mut uncommented[start..end] {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let key = rest.split_once(" = ").map(|(key, _)| key);
        if rest == "[[api_tokens]]"
            || key.is_some_and(|k| k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            keys.extend(key.map(str::to_owned));
            *line = rest.to_owned();
        }
    }
    assert_eq!(keys, ["name", "role", "sha256"], "the block's settings");
    let err = Config::parse(&uncommented.join("\n"))
        .expect_err("the example's token block, uncommented as it stands, loads")
        .to_string();
    assert!(
        err.contains("api_tokens[0].sha256 = ") && err.contains("is a placeholder"),
        "{err}"
    );
}

/// An operator who copies the example and turns the gate off gets the
/// gateless default ceiling (4 boots per pool), not the gate's 64: the
/// example shows `max_concurrent_boots` commented out, as its default.
/// It was set to 64, so `gate = false` alone gave 64 unpaced boots a pool.
#[test]
fn the_example_with_the_gate_off_keeps_the_gateless_boot_ceiling() {
    let example = filled(&read(&deploy_dir().join("warmpoold.example.toml")));
    let gate_lines = example
        .lines()
        .filter(|l| l.trim_start().starts_with("gate ="))
        .count();
    assert_eq!(gate_lines, 1, "the example sets `gate` once");
    let gateless: String = example
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("gate =") {
                "gate = false"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::parse(&gateless).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.manager.max_concurrent_boots(), 4);
    let config = Config::parse(&example).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.manager.max_concurrent_boots(),
        pool_manager::ManagerSettings::default().max_concurrent_boots
    );
}

/// Every `expr` of a Grafana JSON, and its templating queries.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut queries = Vec::new();
    support::dashboard_exprs(dashboard, &mut queries);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables")
    {
        if let Some(definition) = variable["definition"].as_str() {
            queries.push(definition.to_owned());
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_rules_name_only_metrics_the_daemon_exposes() {
    let daemon = Daemon::start(&[("db.small", "az1", 2, 4)]).await;
    // Once the pool is in the store, its per-pool series are exported;
    // its quota headroom only once the first refill has read the cloud's
    // limits (a slow machine can scrape before that).
    let body = eventually("the pool's series on /metrics", Duration::from_secs(30), || async {
        let body = daemon.scrape().await;
        if body.contains(r#"warmpool_pool_instances{flavor="db.small",availability_zone="az1",state="ready"}"#)
            && body.contains(r#"warmpool_pool_quota_headroom{flavor="db.small",availability_zone="az1"}"#)
        {
            Ok(body)
        } else {
            Err(body)
        }
    })
    .await;
    let mut exposed = exposed_names(&body);
    // Families with no series on this daemon, which has no [tls]: taken
    // from metrics that have one.
    let tls = warmpool_server::metrics::Metrics::new();
    tls.set_tls_certificate_expiry("/etc/warmpool/tls/server.crt", 1_900_000_000);
    exposed.extend(exposed_names(&tls.encode()));

    // Every family is documented, prefixed, and named by its unit and type.
    let families = families(&body);
    assert!(families.len() >= 15, "{families:#?}");
    for family in &families {
        assert!(family.name.starts_with("warmpool_"), "{family:?}");
        assert!(
            family.help.as_deref().is_some_and(|h| h.len() > 10),
            "no doc line for {family:?}"
        );
        if family.kind == "histogram" {
            assert!(
                family.name.ends_with("_seconds"),
                "histograms measure seconds: {family:?}"
            );
        }
    }

    let queries = dashboard_queries(&support::dashboard());
    assert!(
        queries.len() >= 15,
        "only {} queries in the dashboard",
        queries.len()
    );
    let mut referenced = BTreeSet::new();
    for query in &queries {
        let names = warmpool_identifiers(query);
        assert!(
            !names.is_empty(),
            "dashboard query names no warmpool metric: {query}"
        );
        referenced.extend(names);
    }

    let rules = files_ending(&deploy_dir().join("prometheus"), ".yml");
    assert!(rules.iter().any(|p| p.ends_with("alerts.yml")), "{rules:?}");
    for path in &rules {
        referenced.extend(warmpool_identifiers(&read(path)));
    }

    let unknown: Vec<_> = referenced.difference(&exposed).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard or rules name metrics warmpoold does not expose: {unknown:?}\nexposed: {exposed:#?}"
    );
    // A label value no series has selects nothing, silently (the hit
    // rate's denominator would leave purchases out, an alert would never
    // fire), and `!=` one selects everything. Every matcher on a label
    // warmpoold gives fixed values (all but the pool's flavor and zone,
    // the certificate's file and the buckets' bounds, checked below), in
    // the dashboard, the rules and their tests' input series, names a
    // value the series it selects has, and a label it has. The live
    // scrape has every pool's series from the start; a cloud call's status
    // only once a call had it: those come from metrics that saw a call of
    // each status to each service.
    let rule_texts: Vec<String> = rules.iter().map(|p| read(p)).collect();
    let cloud_calls = warmpool_server::metrics::Metrics::new();
    let services = label_values(
        &cloud_calls.encode(),
        "warmpool_cloud_throttled_total",
        "service",
    );
    for service in &services {
        // Named as MeteredCloud names it, by a &'static str.
        let service: &'static str = Box::leak(service.clone().into_boxed_str());
        for error in [None]
            .into_iter()
            .chain(every_cloud_error().iter().map(Some))
        {
            cloud_calls.observe_cloud(service, error, Duration::from_millis(5));
        }
    }
    let series = series_labels(&format!("{body}{}{}", tls.encode(), cloud_calls.encode()));
    let free = ["flavor", "availability_zone", "cert_file", "le"];
    let fixed: BTreeSet<&str> = series
        .values()
        .flat_map(|labels| labels.keys())
        .map(String::as_str)
        .filter(|label| !free.contains(label))
        .collect();
    for needed in [
        "state", "outcome", "path", "result", "window", "quantile", "reason", "service", "status",
        "method",
    ] {
        assert!(fixed.contains(needed), "no series has {needed}: {fixed:?}");
    }
    let mut checked = BTreeSet::new();
    for text in queries.iter().chain(&rule_texts) {
        for m in selector_matchers(text) {
            if !fixed.contains(m.label.as_str()) {
                continue;
            }
            let selector = format!("{}{{{}{}\"{}\"}}", m.metric, m.label, m.op, m.value);
            let has = series
                .get(&m.metric)
                .and_then(|labels| labels.get(&m.label))
                .unwrap_or_else(|| {
                    panic!(
                        "{selector}: warmpoold's {} has no label {} ({:?}), it selects nothing: {text}",
                        m.metric,
                        m.label,
                        series.get(&m.metric).map(|l| l.keys().collect::<Vec<_>>())
                    )
                });
            // A regex beyond alternatives of plain values (`a|b`), or a
            // dashboard variable, cannot be checked value by value.
            let plain = |v: &str| {
                v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
            };
            let values: Vec<&str> = match m.op.as_str() {
                "=" | "!=" => vec![m.value.as_str()],
                _ => m.value.split('|').collect(),
            };
            if !values.iter().all(|v| plain(v)) {
                continue;
            }
            for value in values {
                assert!(
                    has.contains(value),
                    "{selector} names {} {value:?}, which warmpoold's {} never has: {has:?}\n{text}",
                    m.label,
                    m.metric
                );
                checked.insert((m.metric.clone(), m.label.clone(), value.to_owned()));
            }
        }
    }
    let labels_checked: BTreeSet<&str> = checked.iter().map(|(_, l, _)| l.as_str()).collect();
    assert!(
        checked.len() >= 15 && labels_checked.len() >= 5,
        "only {} values of {labels_checked:?} checked: {checked:?}",
        checked.len()
    );
    // The rules' unit tests feed histograms the bucket bounds warmpoold
    // has: a quantile computed from bounds it lacks says nothing of what
    // the alert does on real scrapes.
    let bounds = bucket_bounds(&body);
    for path in rules
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("_test.yml"))
    {
        let fed = bucket_bounds(&read(path));
        let foreign: Vec<_> = fed.difference(&bounds).collect();
        assert!(
            foreign.is_empty(),
            "{} feeds buckets warmpoold does not expose: {foreign:?}\nexposed: {bounds:#?}",
            path.display()
        );
    }
    // The issue's must-haves are all referenced somewhere.
    for needed in [
        "warmpool_pool_instances",
        "warmpool_pool_effective_target",
        "warmpool_allocations_total",
        "warmpool_boot_lead_time_seconds_bucket",
        "warmpool_allocate_duration_seconds_bucket",
        "warmpool_pool_exhausted_total",
        "warmpool_leaks_deleted_total",
        "warmpool_cloud_throttled_total",
    ] {
        assert!(
            referenced.contains(needed),
            "nothing in deploy/ uses {needed}"
        );
    }
    daemon.shut_down().await;
}

/// The values of `label` on the samples of `metric` in a /metrics body.
fn label_values(body: &str, metric: &str, label: &str) -> BTreeSet<String> {
    body.lines()
        .filter_map(|line| line.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|labels| {
            let labels = labels.split_once('}').map_or(labels, |(l, _)| l);
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(label)?.strip_prefix("=\""))
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned)
        })
        .collect()
}

/// One label matcher of a selector: `metric{label op "value"}`.
#[derive(Debug)]
struct Matcher {
    metric: String,
    label: String,
    /// `=`, `!=`, `=~` or `!~`.
    op: String,
    value: String,
}

/// The label matchers of every selector of a warmpool metric in `text`
/// (PromQL, a promtool test's input series, or a /metrics body, whose
/// labels read as `=` matchers).
fn selector_matchers(text: &str) -> Vec<Matcher> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("warmpool_") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let metric = &rest[..name_len];
        rest = &rest[name_len..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let Some(mut labels) = rest.trim_start().strip_prefix('{') else {
            continue;
        };
        loop {
            labels = labels.trim_start_matches([' ', ',', '\n']);
            let label_len = labels
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(labels.len());
            if label_len == 0 {
                break;
            }
            let label = &labels[..label_len];
            let after = labels[label_len..].trim_start();
            let Some(op) = ["=~", "!~", "!=", "="]
                .into_iter()
                .find(|op| after.starts_with(op))
            else {
                break;
            };
            let Some((value, tail)) = after[op.len()..]
                .trim_start()
                .strip_prefix('"')
                .and_then(|v| v.split_once('"'))
            else {
                break;
            };
            found.push(Matcher {
                metric: metric.to_owned(),
                label: label.to_owned(),
                op: op.to_owned(),
                value: value.to_owned(),
            });
            labels = tail;
        }
    }
    found
}

/// Every series name of a /metrics body, with the values each of its
/// labels takes.
fn series_labels(body: &str) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        for m in selector_matchers(line) {
            series
                .entry(m.metric)
                .or_default()
                .entry(m.label)
                .or_default()
                .insert(m.value);
        }
    }
    series
}

/// One error of each kind a cloud call can end with (each its own
/// `status` of the cloud metrics, or one it shares).
fn every_cloud_error() -> Vec<pool_manager::cloud::CloudError> {
    use pool_manager::cloud::CloudError;
    let message = || "from deploy_files".to_owned();
    let errors = vec![
        CloudError::Throttled {
            retry_after: Some(Duration::from_secs(1)),
            message: message(),
            unavailable: false,
        },
        CloudError::QuotaExceeded(message()),
        CloudError::Conflict(message()),
        CloudError::NotFound(message()),
        CloudError::Transient(message()),
        CloudError::Fatal(message()),
        CloudError::LeftToReclaim(message()),
        CloudError::PolicyRefused(message()),
    ];
    // A kind added to CloudError stops this match from compiling, and is
    // added above.
    for error in &errors {
        match error {
            CloudError::Throttled { .. }
            | CloudError::QuotaExceeded(_)
            | CloudError::Conflict(_)
            | CloudError::NotFound(_)
            | CloudError::Transient(_)
            | CloudError::Fatal(_)
            | CloudError::LeftToReclaim(_)
            | CloudError::PolicyRefused(_) => {}
        }
    }
    errors
}

/// The (series name, `le`) of every histogram bucket sample or input series
/// in `text` (a /metrics body, or a promtool test's input series).
fn bucket_bounds(text: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let Some(at) = line.find("_bucket{") else {
            continue;
        };
        let start = line[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let name = &line[start..at + "_bucket".len()];
        let labels = &line[at + "_bucket{".len()..];
        let labels = labels.split_once('}').map_or(labels, |(l, _)| l);
        let le = labels
            .split(',')
            .find_map(|label| label.trim().strip_prefix("le=\""))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("a bucket without le: {line}"));
        found.insert((name.to_owned(), le.to_owned()));
    }
    found
}

/// The lines of a systemd unit setting `key`, shown commented out or not:
/// the value of each, with whether it is in force.
fn unit_settings<'a>(unit: &'a str, key: &str) -> Vec<(&'a str, bool)> {
    unit.lines()
        .filter_map(|line| {
            let shown = line.trim_start_matches(['#', ' ']);
            let value = shown.strip_prefix(key)?.strip_prefix('=')?;
            Some((value.trim(), !line.trim_start().starts_with('#')))
        })
        .collect()
}

/// The values an example config shows for `key` (set or commented out).
fn shown_values(config: &str, key: &str) -> Vec<String> {
    config
        .lines()
        .filter_map(|line| {
            let shown = line.trim_start_matches(['#', ' ']);
            let rest = shown.strip_prefix(key)?.trim_start().strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_owned())
        })
        .collect()
}

#[test]
fn a_dynamic_user_unit_shows_how_it_gets_the_cloud_credentials() {
    let unit_path = deploy_dir().join("warmpoold.service");
    let unit = read(&unit_path);
    let unit_name = unit_path.file_name().unwrap().to_string_lossy();
    let dynamic = unit_settings(&unit, "DynamicUser")
        .iter()
        .any(|&(value, in_force)| in_force && value == "yes");
    assert!(
        dynamic,
        "the unit no longer runs as a dynamic user: revisit this test"
    );
    // A dynamic user reads no file only root may read (an operator's
    // clouds.yaml), and ProtectHome hides ~/.config/openstack: the cloud's
    // credentials come in as a systemd credential, which the example config
    // reads where systemd puts it.
    let credentials: Vec<(String, String)> = unit_settings(&unit, "LoadCredential")
        .iter()
        .filter_map(|(value, _)| value.split_once(':'))
        .map(|(id, source)| (id.to_owned(), source.to_owned()))
        .collect();
    let example = read(&deploy_dir().join("warmpoold.example.toml"));
    let shown = shown_values(&example, "clouds_yaml");
    assert!(!shown.is_empty(), "the example shows no clouds_yaml");
    for path in &shown {
        let id = path
            .strip_prefix(&format!("/run/credentials/{unit_name}/"))
            .unwrap_or_else(|| {
                panic!(
                    "the example's clouds_yaml = {path:?} is no credential of {unit_name} \
                     (a dynamic user cannot read a clouds.yaml only root may read): \
                     show /run/credentials/{unit_name}/<id> with LoadCredential=<id>:<file> \
                     in the unit"
                )
            });
        let (_, source) = credentials
            .iter()
            .find(|(cred, _)| cred == id)
            .unwrap_or_else(|| {
                panic!("{unit_name} loads no credential {id:?} (it loads {credentials:?})")
            });
        assert!(
            source.ends_with("clouds.yaml"),
            "credential {id} comes from {source}"
        );
    }
}

/// Every panel of a Grafana dashboard, those inside rows included.
fn dashboard_panels(panels: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut found = Vec::new();
    for panel in panels.as_array().into_iter().flatten() {
        found.push(panel);
        found.extend(dashboard_panels(&panel["panels"]));
    }
    found
}

/// Whether every metric `expr` names is measured in seconds: a gauge or a
/// histogram's buckets or sum in seconds (not a `_seconds_count`, nor a
/// `_seconds_total`, whose rate is seconds per second).
fn measures_seconds(expr: &str) -> bool {
    let names = warmpool_identifiers(expr);
    !names.is_empty()
        && names.iter().all(|name| {
            ["_seconds", "_seconds_bucket", "_seconds_sum"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
        })
}

#[test]
fn panels_in_seconds_plot_only_seconds_or_give_the_rest_its_own_unit() {
    let dashboard = support::dashboard();
    let mut checked = 0;
    for panel in dashboard_panels(&dashboard["panels"]) {
        if panel["fieldConfig"]["defaults"]["unit"] != "s" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        let overrides = panel["fieldConfig"]["overrides"].as_array();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let ref_id = &target["refId"];
            // Another unit for this query's series, set by its refId.
            let own_unit =
                overrides.into_iter().flatten().any(|o| {
                    o["matcher"]["id"] == "byFrameRefID"
                        && o["matcher"]["options"] == *ref_id
                        && o["properties"].as_array().into_iter().flatten().any(|p| {
                            p["id"] == "unit" && p["value"].as_str().is_some_and(|u| u != "s")
                        })
                });
            assert!(
                measures_seconds(expr) || own_unit,
                "panel {title:?} shows seconds, but query {ref_id} plots something else \
                 without an override (byFrameRefID {ref_id}) giving it its unit: {expr}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} queries in panels of seconds");
}

/// A panel's description is what an operator reads of its series: it
/// names what they count as their HELP does (metrics.rs checks those). A
/// list of the cloud's services names every one a call is counted under,
/// Keystone's (identity) too; throttling counts, and holds boots for, a
/// 503 naming a Retry-After as it does a 429 or 413; a pool is degraded by
/// a failed start-up cloud check as by failed boots.
#[test]
fn panel_descriptions_name_every_cause_their_series_count() {
    let fresh = warmpool_server::metrics::Metrics::new().encode();
    let services = label_values(&fresh, "warmpool_cloud_throttled_total", "service");
    assert!(services.len() >= 5, "{services:?}");
    let dashboard = support::dashboard();
    let mut checked = 0;
    for panel in dashboard_panels(&dashboard["panels"]) {
        let title = panel["title"].as_str().unwrap_or("?");
        let description = panel["description"].as_str().unwrap_or_default();
        let mut exprs = Vec::new();
        support::dashboard_exprs(panel, &mut exprs);
        let names: BTreeSet<String> = exprs.iter().flat_map(|e| warmpool_identifiers(e)).collect();
        let uses = |name: &str| names.iter().any(|n| n.starts_with(name));
        let mut needed: Vec<&str> = Vec::new();
        if uses("warmpool_cloud_request_duration_seconds") && description.contains("compute") {
            needed.extend(services.iter().map(String::as_str));
        }
        if uses("warmpool_cloud_throttled_total") || uses("warmpool_pool_gate_hold") {
            needed.push("503");
        }
        if uses("warmpool_pool_degraded") {
            needed.push("cloud check");
        }
        for cause in needed {
            assert!(
                description.contains(cause),
                "panel {title:?}'s description does not name {cause:?}: {description}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} causes checked");
}

/// A gate hold is a pool's: a quota hold is its flavor's room in the
/// project's quota (or the project's pause after a refusal), and a
/// Retry-After pause of its zone ends for each pool at its own jittered
/// time. A panel aggregating `warmpool_pool_gate_hold` keeps the flavor:
/// `max by (availability_zone, reason)` showed a whole zone held for
/// quota when one flavor of it was.
#[test]
fn the_dashboard_plots_gate_holds_per_pool() {
    let dashboard = support::dashboard();
    let mut exprs = Vec::new();
    support::dashboard_exprs(&dashboard, &mut exprs);
    let holds: Vec<&String> = exprs
        .iter()
        .filter(|e| e.contains("warmpool_pool_gate_hold"))
        .collect();
    assert!(!holds.is_empty(), "no panel plots warmpool_pool_gate_hold");
    for expr in holds {
        for grouping in expr.split(" by (").skip(1) {
            let labels = grouping.split_once(')').map_or(grouping, |(l, _)| l);
            assert!(
                labels.split(',').any(|l| l.trim() == "flavor"),
                "a gate hold aggregated without its flavor: {expr}"
            );
        }
    }
}

/// The Kubernetes workload running warmpoold.
/// The range windows (`[1h]`) of a PromQL query, in order.
fn range_windows(expr: &str) -> Vec<&str> {
    expr.split('[')
        .skip(1)
        .filter_map(|rest| rest.split_once(']').map(|(window, _)| window))
        .collect()
}

/// How a panel's description says a fixed window: "1h" as "last hour",
/// "2h" as "last 2 hours", "10m" as "last 10 minutes".
fn window_in_words(window: &str) -> String {
    let (count, unit) = window.split_at(window.len() - 1);
    let unit = match unit {
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        _ => panic!("a window in {unit:?}: {window}"),
    };
    match count {
        "1" => format!("last {unit}"),
        n => format!("last {n} {unit}s"),
    }
}

/// A share of two rates, or a quantile of a histogram's, is computed from
/// the events the window holds: Grafana's $__rate_interval is a minute at
/// its default settings, so a pool that sells every few minutes had its
/// hit rate flip between 0 %, 100 % and gaps, to be read against a
/// service level of 99.5 %. Such a query takes a window that holds enough
/// of its events, and its panel says which.
#[test]
fn shares_and_quantiles_of_events_take_a_window_their_panel_names() {
    let dashboard = support::dashboard();
    let mut checked = 0;
    for panel in dashboard_panels(&dashboard["panels"]) {
        let title = panel["title"].as_str().unwrap_or("?");
        let description = panel["description"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let over_events = expr.contains("rate(") || expr.contains("increase(");
            let share_or_quantile = expr.contains("histogram_quantile(") || expr.contains(") / ");
            if !(over_events && share_or_quantile) {
                continue;
            }
            for window in range_windows(expr) {
                assert!(
                    !window.starts_with('$'),
                    "panel {title:?} takes a share or quantile over {window}, which can hold \
                     too few events to mean anything: give it a fixed window: {expr}"
                );
                let words = window_in_words(window);
                assert!(
                    description.contains(&words),
                    "panel {title:?}'s description does not say its window ({words}): {description}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} shares or quantiles of events");
}

/// The longest scrape interval the dashboard is written for: Prometheus'
/// default (the example prometheus.yml scrapes every 15 s).
const LONGEST_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);

/// An annotation marks an event where its query, run at every step, finds
/// the counter's increase: the scrape before the event and the one after
/// must be in one window. Windows as long as the step left a gap of up to a
/// scrape interval between one window's last scrape and the next's first:
/// a settings change there was never marked (1 in 4 at 15 s scrapes, every
/// one at 1 m). Every window of an annotation is longer than its step by
/// the longest scrape interval, and fixed: `$__rate_interval` follows the
/// scrape interval set in Grafana's data source, which may not be
/// Prometheus'.
#[test]
fn annotation_windows_outlast_their_step_by_a_scrape_interval() {
    let dashboard = support::dashboard();
    let annotations = dashboard["annotations"]["list"]
        .as_array()
        .expect("the dashboard's annotations");
    let mut checked = 0;
    for annotation in annotations {
        let Some(expr) = annotation["expr"].as_str() else {
            continue;
        };
        let name = annotation["name"].as_str().unwrap_or("?");
        // Grafana's default step for an annotation without one.
        let step = annotation["step"].as_str().unwrap_or("60s");
        let step = humantime::parse_duration(step)
            .unwrap_or_else(|e| panic!("annotation {name:?}: step {step:?}: {e}"));
        let windows = range_windows(expr);
        assert!(
            !windows.is_empty(),
            "annotation {name:?} takes no window: {expr}"
        );
        for window in windows {
            // A subquery's range, before its resolution.
            let range = window.split(':').next().unwrap_or_default();
            let range = humantime::parse_duration(range).unwrap_or_else(|e| {
                panic!(
                    "annotation {name:?} takes a window that is not fixed, {window}: {e}: {expr}"
                )
            });
            assert!(
                range >= step + LONGEST_SCRAPE_INTERVAL,
                "annotation {name:?} takes a window of {window} at a step of {step:?}: an event \
                 between the last scrape of one window and the first of the next, up to \
                 {LONGEST_SCRAPE_INTERVAL:?} apart, is in none: {expr}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} annotation windows");
}

fn k8s_workload() -> serde_yaml::Value {
    let path = deploy_dir().join("kubernetes/statefulset.yaml");
    serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Two warmpoolds on one project would each take the other's servers for
/// leaks and delete them. A Deployment's ReplicaSet replaces a pod on an
/// unreachable node at once, held back only by the volume's attachment
/// (force-detached after about 6 minutes; not at all on some storage); a
/// StatefulSet makes no replacement until the old pod is known gone.
#[test]
fn kubernetes_runs_at_most_one_warmpoold() {
    let workload = k8s_workload();
    assert_eq!(workload["kind"], "StatefulSet", "{workload:?}");
    assert_eq!(workload["spec"]["replicas"], 1, "{workload:?}");
    let kustomization = read(&deploy_dir().join("kubernetes/kustomization.yaml"));
    assert!(
        kustomization.contains("- statefulset.yaml"),
        "{kustomization}"
    );
}

/// The gRPC API buys, releases and deletes pools, and the shipped
/// Kubernetes config has no tokens: the kustomization fences the gRPC port
/// with a NetworkPolicy that selects warmpoold's pods and lets in only
/// labelled client pods, not the whole cluster.
#[test]
fn kubernetes_lets_only_labelled_clients_reach_the_grpc_port() {
    let kustomization = read(&deploy_dir().join("kubernetes/kustomization.yaml"));
    assert!(
        kustomization.contains("- networkpolicy.yaml"),
        "{kustomization}"
    );
    let path = deploy_dir().join("kubernetes/networkpolicy.yaml");
    let policy: serde_yaml::Value =
        serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(policy["kind"], "NetworkPolicy");
    let pod_labels = &k8s_workload()["spec"]["template"]["metadata"]["labels"];
    let selected = policy["spec"]["podSelector"]["matchLabels"]
        .as_mapping()
        .expect("the policy selects pods by label");
    for (key, value) in selected {
        assert_eq!(
            &pod_labels[key], value,
            "the policy selects warmpoold's pods"
        );
    }
    let rules = policy["spec"]["ingress"]
        .as_sequence()
        .expect("ingress rules");
    let grpc_rules: Vec<_> = rules
        .iter()
        .filter(|rule| {
            rule["ports"].as_sequence().is_none_or(|ports| {
                ports
                    .iter()
                    .any(|p| p["port"] == "grpc" || p["port"] == 50051)
            })
        })
        .collect();
    assert!(!grpc_rules.is_empty(), "no rule lets a client reach gRPC");
    for rule in grpc_rules {
        let from = rule["from"].as_sequence().expect("a gRPC rule names who");
        assert!(
            !from.is_empty()
                && from.iter().all(|peer| peer["podSelector"]["matchLabels"]
                    .as_mapping()
                    .is_some_and(|m| !m.is_empty())),
            "gRPC is let in from labelled pods only: {rule:?}"
        );
    }
}

/// warmpoold exits with an error when it cannot go on (its store's disk
/// failed: sled writes nothing more until the store is opened again), and
/// counts on its supervisor to start it again; but not when its start was
/// refused for what only an operator mends (EX_CONFIG: a bad config, a
/// store of another cloud, one that knows none of the pool servers, a
/// record it cannot read): restarted every few seconds, each start would
/// log in to Keystone and list the pool servers again, for ever.
#[test]
fn supervisors_restart_warmpoold_when_it_exits_with_an_error() {
    let unit = read(&deploy_dir().join("warmpoold.service"));
    let in_force = |key: &str| -> Vec<&str> {
        unit_settings(&unit, key)
            .into_iter()
            .filter(|(_, in_force)| *in_force)
            .map(|(value, _)| value)
            .collect()
    };
    let restart = in_force("Restart");
    assert!(
        matches!(restart[..], ["on-failure" | "always"]),
        "the unit sets Restart {restart:?}: systemd's default (no) leaves warmpoold down"
    );
    let needs_an_operator = warmpool_server::EXIT_NEEDS_AN_OPERATOR.to_string();
    let prevented: Vec<&str> = in_force("RestartPreventExitStatus")
        .into_iter()
        .flat_map(str::split_whitespace)
        .collect();
    assert!(
        prevented.contains(&needs_an_operator.as_str()),
        "the unit's RestartPreventExitStatus {prevented:?} lacks {needs_an_operator}: a start \
         refused for what only an operator mends would be restarted every RestartSec, for ever"
    );
    // And no other: every other exit is one a restart may mend.
    assert_eq!(prevented, [needs_an_operator.as_str()]);
    let pod = &k8s_workload()["spec"]["template"]["spec"];
    assert!(
        matches!(pod["restartPolicy"].as_str(), None | Some("Always")),
        "{pod:?}"
    );
}

/// `--delete-unknown-servers` and `--adopt-cloud` are for one start, and
/// the shipped deployments start warmpoold themselves: run by hand as
/// root, it would lack the unit's clouds.yaml (a credential that exists
/// only while the service runs) and leave root's files in the store. The
/// README gives the flag to them for that start and takes it back: under
/// systemd a runtime drop-in clearing ExecStart and setting the line in
/// force (`systemctl cat`; the unit's own line shown) plus the flag,
/// under Kubernetes a JSON patch adding the flag to the StatefulSet's args
/// and one removing it. Those must be the shipped files' own lines, or the
/// recipe starts another warmpoold than the one shipped. Systemd reads
/// the drop-ins of /etc and /run in the order of their file names, the
/// last ExecStart= winning: the recipe's must sort after the
/// `override.conf` that `systemctl edit` writes, or an operator's own
/// ExecStart= there clears the flag's line.
#[test]
fn the_readme_gives_a_start_up_flag_to_the_shipped_deployments_for_one_start() {
    let readme = read(&deploy_dir().join("../README.md"));
    let unit = read(&deploy_dir().join("warmpoold.service"));
    let exec: Vec<&str> = unit_settings(&unit, "ExecStart")
        .into_iter()
        .filter(|(_, in_force)| *in_force)
        .map(|(value, _)| value)
        .collect();
    let [exec] = exec[..] else {
        panic!("the unit sets ExecStart {exec:?}, not once: revisit this test");
    };
    let drop_in = "/run/systemd/system/warmpoold.service.d/";
    let written = format!("sudo tee {drop_in}");
    let at = readme
        .find(&written)
        .unwrap_or_else(|| panic!("README writes no drop-in with `{written}`"));
    let file = readme[at + written.len()..]
        .split_whitespace()
        .next()
        .unwrap();
    assert!(
        file.ends_with(".conf") && file > "override.conf",
        "the drop-in {file:?} sorts before `systemctl edit`'s override.conf, whose ExecStart= would win"
    );
    for shown in [
        "[Service]\nExecStart=\nExecStart=".to_owned(),
        format!("rm {drop_in}{file}"),
        "systemctl cat warmpoold".to_owned(),
        "systemctl daemon-reload".to_owned(),
        "systemctl restart warmpoold".to_owned(),
    ] {
        assert!(readme.contains(&shown), "README does not show `{shown}`");
    }

    let workload = k8s_workload();
    let name = workload["metadata"]["name"].as_str().unwrap();
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    let index = containers
        .iter()
        .position(|c| c["name"] == "warmpoold")
        .expect("a warmpoold container");
    let args = containers[index]["args"].as_sequence().unwrap().len();
    let path = format!("/spec/template/spec/containers/{index}/args");
    let policy = workload["spec"]["podManagementPolicy"].as_str();
    assert!(
        matches!(policy, None | Some("OrderedReady")),
        "podManagementPolicy {policy:?}: README deletes the failing pod so that the \
         StatefulSet, which waits for it to be Ready, starts it from the patched template"
    );
    // Shown with --adopt-cloud; --delete-unknown-servers goes the same way.
    let flag = "--adopt-cloud";
    let add = format!(
        r#"kubectl patch statefulset/{name} --type=json -p='[{{"op":"add","path":"{path}/-","value":"{flag}"}}]'"#
    );
    let remove = format!(
        r#"kubectl patch statefulset/{name} --type=json -p='[{{"op":"test","path":"{path}/{args}","value":"{flag}"}},{{"op":"remove","path":"{path}/{args}"}}]'"#
    );
    for shown in [
        format!("ExecStart={exec} {flag}\n"),
        add.clone(),
        remove.clone(),
        format!("kubectl rollout status statefulset/{name}"),
    ] {
        assert!(readme.contains(&shown), "README does not show `{shown}`");
    }
    // A pod whose start was refused holds up the rollout of either patch
    // (Kubernetes' "Forced rollback"): deleted after each.
    let delete = format!("kubectl delete pod {name}-0");
    for patch in [add, remove] {
        let after = &readme[readme.find(&patch).unwrap() + patch.len()..];
        let block = &after[..after.find("```").unwrap_or(after.len())];
        assert!(
            block.contains(&delete),
            "README does not show `{delete}` after `{patch}`"
        );
    }
}

/// The kubelet must not kill a warmpoold that is starting: the start-up
/// reconcile can take many minutes, in which health says NOT_SERVING for
/// "" (what readiness asks), so the startup and liveness probes ask the
/// service that says whether warmpoold runs.
#[test]
fn kubernetes_probes_tell_a_starting_warmpoold_from_a_dead_one() {
    let container = k8s_container();
    for probe in ["startupProbe", "livenessProbe"] {
        let grpc = &container[probe]["grpc"];
        assert_eq!(grpc["port"].as_u64(), Some(50051), "{probe}: {grpc:?}");
        assert_eq!(
            grpc["service"].as_str(),
            Some(warmpool_server::LIVENESS_SERVICE),
            "{probe} must ask the liveness service, SERVING while warmpoold starts: {grpc:?}"
        );
    }
    let readiness = &container["readinessProbe"]["grpc"];
    assert_eq!(readiness["port"].as_u64(), Some(50051), "{readiness:?}");
    assert!(
        matches!(readiness["service"].as_str(), None | Some("")),
        "readiness asks \"\", SERVING once warmpool.v1 is served: {readiness:?}"
    );
}

/// The Kubernetes workload's warmpoold container.
fn k8s_container() -> serde_yaml::Value {
    let workload = k8s_workload();
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("the workload's containers");
    containers
        .iter()
        .find(|c| c["name"] == "warmpoold")
        .expect("a warmpoold container")
        .clone()
}

/// A Kubernetes memory quantity ("512Mi", "1Gi", "500M", "1048576") in bytes.
fn k8s_bytes(quantity: &str) -> u64 {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (number, factor) = units
        .iter()
        .find_map(|&(unit, factor)| quantity.strip_suffix(unit).map(|n| (n, factor)))
        .unwrap_or((quantity, 1));
    number
        .parse::<u64>()
        .unwrap_or_else(|e| panic!("memory quantity {quantity:?}: {e}"))
        * factor
}

#[test]
fn the_k8s_stores_cache_fits_well_under_the_pods_memory_limit() {
    let container = k8s_container();
    let limit = container["resources"]["limits"]["memory"]
        .as_str()
        .expect("the warmpoold container has a memory limit");
    let limit = k8s_bytes(limit);
    let path = deploy_dir().join("kubernetes/warmpoold.toml");
    // Set in the file, not left to a default a later version may change.
    let table: toml::Table = read(&path).parse().expect("valid TOML");
    assert!(
        table.contains_key("store_cache_capacity"),
        "{} sets no store_cache_capacity under the pod's {limit}-byte memory limit",
        path.display()
    );
    let capacity = load_filled(&path).store_cache_capacity;
    // sled's cache is counted loosely (its resident size runs above it), and
    // the daemon needs memory of its own: at most half the limit.
    assert!(
        capacity <= limit / 2,
        "store_cache_capacity {capacity} bytes is more than half the pod's memory limit ({limit} bytes)"
    );
}

/// A systemd time span ("60", "90s", "1min 30s"): bare numbers are seconds.
fn systemd_span(value: &str) -> Duration {
    match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            humantime::parse_duration(value).unwrap_or_else(|e| panic!("time span {value:?}: {e}"))
        }
    }
}

/// Every stop timeout deploy/ ships waits out the longest `shutdown_grace`
/// the config takes, the wait for cut connections to close and the final
/// flush after them, so no config the daemon
/// accepts has a shipped supervisor kill it before the store is flushed;
/// and the shortest of them is what `MAX_SHUTDOWN_GRACE` was chosen for
/// (its error names it).
#[test]
fn supervisors_wait_out_the_shutdown_grace_and_the_final_flush() {
    let needed = MAX_SHUTDOWN_GRACE + CUT_PATIENCE + SHUTDOWN_FLUSH_MARGIN;
    let mut timeouts: Vec<(&str, Duration)> = Vec::new();
    // systemd: the unit runs the example config (its install lines copy it
    // to /etc/warmpool/warmpoold.toml).
    let unit = read(&deploy_dir().join("warmpoold.service"));
    assert!(
        unit.contains("deploy/warmpoold.example.toml /etc/warmpool/warmpoold.toml")
            && unit.contains("--config /etc/warmpool/warmpoold.toml"),
        "the unit no longer runs the example config: revisit this test"
    );
    let stop: Vec<Duration> = unit_settings(&unit, "TimeoutStopSec")
        .iter()
        .filter(|(_, in_force)| *in_force)
        .map(|(value, _)| systemd_span(value))
        .collect();
    let [stop] = stop[..] else {
        panic!("the unit sets TimeoutStopSec {stop:?}, not once: systemd's default (90s) is not warmpool's to rely on");
    };
    timeouts.push(("warmpoold.service TimeoutStopSec", stop));
    load_filled(&deploy_dir().join("warmpoold.example.toml"));

    // Kubernetes: the pod's grace against the ConfigMap's config.
    let grace = k8s_workload()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .map(Duration::from_secs)
        .expect("the workload sets terminationGracePeriodSeconds (Kubernetes' default is 30s)");
    timeouts.push(("kubernetes terminationGracePeriodSeconds", grace));
    load_filled(&deploy_dir().join("kubernetes/warmpoold.toml"));

    // podman/docker: the Containerfile's run line.
    let containerfile = read(&deploy_dir().join("Containerfile"));
    let runs: Vec<Duration> = containerfile
        .lines()
        .filter_map(|l| l.split("--stop-timeout ").nth(1))
        .map(|rest| {
            let seconds = rest.split_whitespace().next().unwrap_or_default();
            Duration::from_secs(
                seconds
                    .parse()
                    .unwrap_or_else(|e| panic!("Containerfile: --stop-timeout {seconds:?}: {e}")),
            )
        })
        .collect();
    assert!(
        !runs.is_empty(),
        "the Containerfile's run line has no --stop-timeout (podman's and docker's default is 10s)"
    );
    timeouts.extend(
        runs.into_iter()
            .map(|t| ("Containerfile --stop-timeout", t)),
    );

    for (what, timeout) in &timeouts {
        assert!(
            *timeout >= needed,
            "{what} {timeout:?} does not wait out the longest shutdown_grace ({MAX_SHUTDOWN_GRACE:?}), {CUT_PATIENCE:?} for cut connections to close and {SHUTDOWN_FLUSH_MARGIN:?} for the final flush"
        );
    }
    let shortest = timeouts.iter().map(|(_, t)| *t).min().unwrap();
    assert_eq!(
        shortest, needed,
        "deploy/'s shortest stop timeout is {shortest:?}: MAX_SHUTDOWN_GRACE (and the docs and error naming it) follow it"
    );
}

/// The container's runtime stage installs Debian's `ca-certificates`: the
/// OpenStack driver and warmpoolctl trust the system's roots (warmpoolctl
/// only those, without --ca-file), and bookworm-slim ships none.
#[test]
fn the_containers_runtime_stage_installs_ca_certificates() {
    let runtime = containerfile_runtime_stage();
    let installs = runtime.iter().any(|l| {
        l.starts_with("RUN ")
            && l.split("&&").any(|command| {
                let words: Vec<&str> = command.split_whitespace().collect();
                words.windows(2).any(|w| w == ["apt-get", "install"])
                    && words.contains(&"ca-certificates")
            })
    });
    assert!(
        installs,
        "the Containerfile's runtime stage ({}) installs no ca-certificates: \
         warmpoolctl without --ca-file would trust no CA, the OpenStack driver only webpki's",
        runtime[0]
    );
}

/// The Containerfile's runtime stage, the image that ships: the
/// instructions from its last FROM on, their continued lines joined,
/// comments dropped.
fn containerfile_runtime_stage() -> Vec<String> {
    let containerfile = read(&deploy_dir().join("Containerfile"));
    let mut instructions: Vec<String> = containerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let runtime = instructions
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("the Containerfile has no FROM");
    instructions.split_off(runtime)
}

/// The config file the systemd unit's install lines copy to the file its
/// `ExecStart` reads.
fn config_the_unit_installs(unit: &str) -> PathBuf {
    let installed = unit
        .lines()
        .filter_map(|l| l.trim_start_matches(['#', ' ']).strip_prefix("install "))
        .find_map(|args| {
            let words: Vec<&str> = args.split_whitespace().collect();
            match words[..] {
                [.., source, "/etc/warmpool/warmpoold.toml"] => Some(source.to_owned()),
                _ => None,
            }
        })
        .expect("the unit's install lines copy a config to /etc/warmpool/warmpoold.toml");
    assert!(
        unit.contains("--config /etc/warmpool/warmpoold.toml"),
        "the unit no longer runs the config its install lines copy: revisit this test"
    );
    deploy_dir().join("..").join(installed)
}

fn openstack_of(config: Config, path: &Path) -> Box<warmpool_server::config::OpenStackConfig> {
    match config.cloud {
        CloudConfig::OpenStack(os) => os,
        other => panic!(
            "{} runs {other:?}: deploy/ is what running warmpool for real takes, and the \
             embedded cloud boots nothing for real (purchases would get servers that do not exist)",
            path.display()
        ),
    }
}

/// What systemd runs, once its install lines are followed, drives a real
/// cloud, with placeholders left for what only an operator knows, and
/// reads its clouds.yaml where the unit hands it over as a credential (in
/// force: the dynamic user cannot read root's clouds.yaml).
#[test]
fn the_config_the_systemd_unit_installs_drives_openstack() {
    let unit_path = deploy_dir().join("warmpoold.service");
    let unit = read(&unit_path);
    let path = config_the_unit_installs(&unit);
    let os = openstack_of(load_filled(&path), &path);
    assert!(has_placeholders(&read(&path)), "{}", path.display());
    let clouds_yaml = os
        .clouds_yaml
        .unwrap_or_else(|| panic!("{} names no clouds_yaml", path.display()));
    let unit_name = unit_path.file_name().unwrap().to_string_lossy();
    let id = clouds_yaml
        .strip_prefix(format!("/run/credentials/{unit_name}"))
        .unwrap_or_else(|_| panic!("clouds_yaml {} is no credential", clouds_yaml.display()))
        .to_string_lossy()
        .into_owned();
    let loaded = unit_settings(&unit, "LoadCredential")
        .iter()
        .any(|(value, in_force)| *in_force && value.starts_with(&format!("{id}:")));
    assert!(
        loaded,
        "{unit_name} does not load the credential {id:?} in force"
    );
}

/// What Kubernetes runs drives a real cloud: its clouds.yaml comes from a
/// Secret the StatefulSet mounts read-only where the config reads it,
/// under the key the documented `kubectl create secret` gives it; no
/// Secret (no credential) is in the repository.
#[test]
fn kubernetes_runs_openstack_with_clouds_yaml_from_a_secret() {
    let path = deploy_dir().join("kubernetes/warmpoold.toml");
    let os = openstack_of(load_filled(&path), &path);
    assert!(has_placeholders(&read(&path)), "{}", path.display());
    let clouds_yaml = os
        .clouds_yaml
        .unwrap_or_else(|| panic!("{} names no clouds_yaml", path.display()));
    let dir = clouds_yaml.parent().unwrap().to_string_lossy().into_owned();
    let file = clouds_yaml
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let container = k8s_container();
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("volume mounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(dir.as_str()))
        .unwrap_or_else(|| panic!("nothing is mounted at {dir}, where clouds_yaml is read"));
    assert_eq!(mount["readOnly"], true, "{mount:?}");
    let workload = k8s_workload();
    let volume = workload["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume")
        .clone();
    let secret = volume["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{dir} is not mounted from a Secret: {volume:?}"));
    let key = match volume["secret"]["items"].as_sequence() {
        Some(items) => items
            .iter()
            .find(|i| i["path"].as_str() == Some(file.as_str()))
            .and_then(|i| i["key"].as_str())
            .unwrap_or_else(|| panic!("the Secret's items put nothing at {file}"))
            .to_owned(),
        None => file.clone(),
    };
    let readme = read(&deploy_dir().join("../README.md"));
    let create = format!("kubectl create secret generic {secret} --from-file={key}=");
    assert!(
        readme.contains(&create),
        "README does not show `{create}...`"
    );
    for manifest in files_ending(&deploy_dir().join("kubernetes"), ".yaml") {
        let text = read(&manifest);
        assert!(
            !text.lines().any(|l| l.trim() == "kind: Secret"),
            "{} commits a Secret",
            manifest.display()
        );
    }
}

/// The README's procedure for the store commands under Kubernetes names
/// what `deploy/kubernetes` ships: the pod mounts the StatefulSet's PVC
/// where the config's data_dir is, as the StatefulSet's user and group
/// with its image, and the commands stop and start that StatefulSet,
/// wait for its pod, and pass that data dir.
#[test]
fn the_readmes_kubernetes_store_procedure_matches_the_manifests() {
    let readme = read(&deploy_dir().join("../README.md"));
    let block = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(yaml, _)| yaml))
        .find(|yaml| yaml.contains("name: warmpoold-store"))
        .expect("README shows the store pod's manifest");
    let pod: serde_yaml::Value = serde_yaml::from_str(block).unwrap();
    let workload = k8s_workload();
    let template = &workload["spec"]["template"]["spec"];
    for key in ["runAsUser", "runAsGroup", "fsGroup", "runAsNonRoot"] {
        assert_eq!(
            pod["spec"]["securityContext"][key], template["securityContext"][key],
            "{key}"
        );
    }
    let daemon = k8s_container();
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], daemon["image"]);
    assert_eq!(container["securityContext"], daemon["securityContext"]);

    let config = load_filled(&deploy_dir().join("kubernetes/warmpoold.toml"));
    let data_dir = config.data_dir.display().to_string();
    let daemon_mount = daemon["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(data_dir.as_str()))
        .expect("the StatefulSet mounts a volume at the config's data_dir");
    let claim = |spec: &serde_yaml::Value, volume: &serde_yaml::Value| {
        spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == *volume)
            .expect("the mount's volume")["persistentVolumeClaim"]["claimName"]
            .clone()
    };
    let pod_mount = &container["volumeMounts"][0];
    assert_eq!(pod_mount["mountPath"].as_str(), Some(data_dir.as_str()));
    assert_eq!(
        claim(&pod["spec"], &pod_mount["name"]),
        claim(template, &daemon_mount["name"])
    );

    let name = workload["metadata"]["name"].as_str().unwrap();
    for shown in [
        format!("kubectl scale statefulset/{name} --replicas=0"),
        format!("kubectl wait --for=delete pod/{name}-0"),
        format!("kubectl scale statefulset/{name} --replicas=1"),
        format!("warmpoold --data-dir {data_dir} store check"),
    ] {
        assert!(readme.contains(&shown), "README does not show `{shown}`");
    }
}

/// Every container that runs warmpoold's image under Kubernetes (the
/// StatefulSet, the README's store pod) pulls it only when the node lacks
/// it. With no policy, a `:latest` tag gets `Always`: an image built
/// locally or `kind load`ed, in no registry, fails with ErrImagePull.
#[test]
fn kubernetes_pulls_warmpoolds_image_only_when_the_node_lacks_it() {
    let readme = read(&deploy_dir().join("../README.md"));
    let store_pod = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(yaml, _)| yaml))
        .find(|yaml| yaml.contains("name: warmpoold-store"))
        .expect("README shows the store pod's manifest");
    let store_pod: serde_yaml::Value = serde_yaml::from_str(store_pod).unwrap();
    let workload = k8s_workload();
    for (what, spec) in [
        ("statefulset.yaml", &workload["spec"]["template"]["spec"]),
        ("README's warmpoold-store", &store_pod["spec"]),
    ] {
        for container in spec["containers"].as_sequence().unwrap() {
            assert_eq!(
                container["imagePullPolicy"].as_str(),
                Some("IfNotPresent"),
                "{what}: container {:?} (image {:?})",
                container["name"],
                container["image"]
            );
        }
    }
}

/// The container image's working directory is its volume: a config that
/// sets no data_dir keeps its store at the default, relative path, which
/// must land in the volume, writable by the image's user, not in `/`
/// (refused to uid 10001, and lost with the container when run as root).
#[test]
fn a_containers_store_at_the_default_data_dir_lands_in_its_volume() {
    let runtime = containerfile_runtime_stage();
    let last = |keyword: &str| {
        runtime
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(keyword).map(str::trim))
    };
    let workdir = Path::new(last("WORKDIR ").unwrap_or("/"));
    let volume = Path::new(last("VOLUME ").expect("the runtime stage declares a VOLUME"));
    let store = workdir.join(warmpool_server::config::DEFAULT_DATA_DIR);
    assert!(
        store.starts_with(volume),
        "the default data_dir is {} in the container, outside its volume {}",
        store.display(),
        volume.display()
    );
}

/// The testbed README's config keeps its store apart from the embedded
/// demo's (`./warmpool-data`, which the README's tour fills from the same
/// repository root): on that store warmpoold refuses to start, and the
/// `--adopt-cloud` it suggests would boot the demo's pools on the testbed.
/// It is the store of deploy/testbed/warmpoold.toml, which drives the
/// same project.
#[test]
fn the_testbed_readmes_config_keeps_its_own_store() {
    let readme = read(&deploy_dir().join("testbed/README.md"));
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(toml, _)| toml))
        .collect();
    assert!(!blocks.is_empty(), "the testbed README shows no config");
    let testbed = Config::load(&deploy_dir().join("testbed/warmpoold.toml")).unwrap();
    for block in blocks {
        let config = Config::parse(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert_ne!(
            config.data_dir,
            Path::new(warmpool_server::config::DEFAULT_DATA_DIR),
            "the embedded demo's store:\n{block}"
        );
        assert_eq!(config.data_dir, testbed.data_dir, "{block}");
    }
}
