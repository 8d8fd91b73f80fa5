//! `warmpoold check-cloud` against deploy/testbed: the real binary, a config
//! file as an operator writes it. It passes against the testbed as it is,
//! and fails, naming the problem, with a wrong password, a missing image,
//! an exhausted quota, a key pair and a security group the cloud lacks.
//!
//! Like e2e_testbed.rs, this FAILS (never skips) when the testbed is not up:
//! run `sudo deploy/testbed/up.sh` or `bash scripts/test.sh`.

mod testbed;

use std::path::Path;
use std::process::Command;

use testbed::{
    clouds_yaml, config_text, require_testbed, run_id, PoolDecl, E2E_CLOUD, E2E_NETWORK,
    E2E_PASSWORD, NOQUOTA_CLOUD, NOQUOTA_NETWORK,
};

const POOLS: [PoolDecl; 2] = [
    PoolDecl {
        flavor: "db.small",
        az: "az1",
        min_ready: 1,
        max_ready: 2,
    },
    PoolDecl {
        flavor: "db.small",
        az: "az2",
        min_ready: 1,
        max_ready: 2,
    },
];

/// Runs `warmpoold check-cloud --config <dir>/warmpoold.toml` with `text`:
/// exit code and stdout + stderr.
fn check_cloud(dir: &Path, text: &str) -> (i32, String) {
    let config = dir.join("warmpoold.toml");
    std::fs::write(&config, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_warmpoold"))
        .arg("check-cloud")
        .arg("--config")
        .arg(&config)
        // Only the config names the cloud.
        .env_remove("OS_CLOUD")
        .env_remove("OS_CLIENT_CONFIG_FILE")
        .output()
        .expect("run warmpoold check-cloud");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The report line about `kind` ("auth: ...", "image: ...").
fn line<'a>(report: &'a str, kind: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(&format!("{kind}: ")))
        .unwrap_or_else(|| panic!("no `{kind}:` line in the report:\n{report}"))
}

#[tokio::test]
async fn check_cloud_passes_against_the_testbed() {
    require_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&dir.path().join("store"), E2E_CLOUD, E2E_NETWORK, &POOLS);
    let (code, report) = check_cloud(dir.path(), &text);
    assert_eq!(code, 0, "check-cloud failed against the testbed:\n{report}");
    for kind in [
        "auth",
        "flavor",
        "flavor iops",
        "image",
        "network",
        "zones",
        "volumes",
        "quota",
    ] {
        assert!(
            line(&report, kind).starts_with(&format!("{kind}: ok")),
            "{kind} not ok:\n{report}"
        );
    }
    assert!(line(&report, "auth").contains("warmpool-e2e"), "{report}");
    // The testbed's flavors set no front-end QoS.
    assert!(
        line(&report, "flavor iops").starts_with("flavor iops: ok (db.small: none: "),
        "{report}"
    );
}

#[tokio::test]
async fn check_cloud_names_a_wrong_password() {
    require_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    // The testbed's clouds.yaml with one wrong password.
    let yaml = std::fs::read_to_string(clouds_yaml()).expect("read clouds.yaml");
    let wrong = yaml.replace(
        &format!("password: {E2E_PASSWORD}\n"),
        "password: not-the-password\n",
    );
    assert_ne!(wrong, yaml, "clouds.yaml has no `password: {E2E_PASSWORD}`");
    let wrong_yaml = dir.path().join("clouds.yaml");
    std::fs::write(&wrong_yaml, wrong).unwrap();
    let text = config_text(&dir.path().join("store"), E2E_CLOUD, E2E_NETWORK, &POOLS).replace(
        &format!("clouds_yaml = {:?}", clouds_yaml().display().to_string()),
        &format!("clouds_yaml = {:?}", wrong_yaml.display().to_string()),
    );
    assert!(text.contains(&wrong_yaml.display().to_string()), "{text}");
    let (code, report) = check_cloud(dir.path(), &text);
    assert_eq!(code, 1, "{report}");
    let auth = line(&report, "auth").to_lowercase();
    assert!(!auth.starts_with("auth: ok"), "{report}");
    assert!(
        ["password", "credential", "401", "unauthori", "authenticat"]
            .iter()
            .any(|w| auth.contains(w)),
        "the auth line does not say the credentials were refused:\n{report}"
    );
}

#[tokio::test]
async fn check_cloud_names_a_missing_image() {
    require_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    let image = format!("no-such-image-{}", run_id());
    let text = config_text(&dir.path().join("store"), E2E_CLOUD, E2E_NETWORK, &POOLS)
        .replace("image = \"mysql-8.0\"", &format!("image = \"{image}\""));
    assert!(text.contains(&image), "{text}");
    let (code, report) = check_cloud(dir.path(), &text);
    assert_eq!(code, 1, "{report}");
    assert!(line(&report, "auth").starts_with("auth: ok"), "{report}");
    let image_line = line(&report, "image");
    assert!(!image_line.starts_with("image: ok"), "{report}");
    assert!(image_line.contains(&image), "{report}");
}

#[tokio::test]
async fn check_cloud_names_a_flavor_beyond_the_quota() {
    require_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    // db.huge: 64 vCPUs, more than the project's cores quota (bootstrap).
    let pools = [PoolDecl {
        flavor: "db.huge",
        az: "az1",
        min_ready: 0,
        max_ready: 1,
    }];
    let text = config_text(&dir.path().join("store"), E2E_CLOUD, E2E_NETWORK, &pools);
    let (code, report) = check_cloud(dir.path(), &text);
    assert_eq!(code, 1, "{report}");
    let quota = line(&report, "quota");
    assert!(
        quota.contains("cores: one db.huge server needs 64, the quota is "),
        "{report}"
    );
}

#[tokio::test]
async fn check_cloud_names_an_exhausted_quota() {
    require_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    // warmpool-noquota: compute quota 0 instances, 0 cores (bootstrap_warmpool.py).
    let text = config_text(
        &dir.path().join("store"),
        NOQUOTA_CLOUD,
        NOQUOTA_NETWORK,
        &POOLS,
    );
    let (code, report) = check_cloud(dir.path(), &text);
    assert_eq!(code, 1, "{report}");
    assert!(line(&report, "auth").starts_with("auth: ok"), "{report}");
    let quota = line(&report, "quota");
    assert!(!quota.starts_with("quota: ok"), "{report}");
    assert!(
        quota.contains("db.small") && ["instances", "cores"].iter().any(|w| quota.contains(w)),
        "the quota line does not name the flavor and the binding quota:\n{report}"
    );
}

/// `text` with `setting` added to its `[cloud]` section.
fn with_cloud_setting(text: &str, setting: &str) -> String {
    let anchor = "request_timeout = \"60s\"\n";
    assert!(text.contains(anchor), "no `{anchor}` in:\n{text}");
    text.replacen(anchor, &format!("{anchor}{setting}\n"), 1)
}

#[tokio::test]
async fn check_cloud_names_a_missing_key_pair() {
    require_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    // bootstrap_warmpool.py creates no key pair for warmpool-e2e's user.
    let key = format!("no-such-key-{}", run_id());
    let text = with_cloud_setting(
        &config_text(&dir.path().join("store"), E2E_CLOUD, E2E_NETWORK, &POOLS),
        &format!("key_name = \"{key}\""),
    );
    let (code, report) = check_cloud(dir.path(), &text);
    assert_eq!(code, 1, "{report}");
    assert!(line(&report, "auth").starts_with("auth: ok"), "{report}");
    assert_eq!(
        line(&report, "key pair"),
        format!("key pair: cloud.key_name \"{key}\": user warmpool-e2e in project warmpool-e2e has no key pair of that name (Nova keeps key pairs per user: create or import it as the user warmpool authenticates as)"),
        "{report}"
    );
}

#[tokio::test]
async fn check_cloud_finds_the_projects_default_security_group_and_names_a_missing_one() {
    require_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    // Every project has one `default` group; warmpool-e2e's user is an
    // admin, so Neutron lists every project's beside it.
    let text = with_cloud_setting(
        &config_text(&dir.path().join("store"), E2E_CLOUD, E2E_NETWORK, &POOLS),
        "security_groups = [\"default\"]",
    );
    let (code, report) = check_cloud(dir.path(), &text);
    assert_eq!(code, 0, "{report}");
    assert!(
        line(&report, "security group").starts_with("security group: ok (default = "),
        "{report}"
    );

    let group = format!("no-such-group-{}", run_id());
    let text = with_cloud_setting(
        &config_text(&dir.path().join("store"), E2E_CLOUD, E2E_NETWORK, &POOLS),
        &format!("security_groups = [\"{group}\"]"),
    );
    let (code, report) = check_cloud(dir.path(), &text);
    assert_eq!(code, 1, "{report}");
    // The project's own groups are named beside it (its `default` among them).
    let missing = line(&report, "security group");
    assert!(
        missing.starts_with(&format!("security group: cloud.security_groups \"{group}\": no security group named '{group}' is visible to user warmpool-e2e in project warmpool-e2e (the project's security groups: "))
            && missing.contains("default"),
        "{report}"
    );
}
