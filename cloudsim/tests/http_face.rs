//! The HTTP face over real sockets: Keystone tokens, version documents, the
//! Nova/Cinder/Neutron/Glance flows warmpool's driver uses, every error case
//! with its exact status, headers and body, the HTTP and in-process fault
//! knobs, the readiness greeting at each server's address, and osauth 0.5
//! itself authenticating and discovering versions against the face.
//!
//! Real time with a small `time_scale` (a lone boot is ACTIVE after 50 ms).

use cloudsim::http::{HttpFace, HttpSettings, NetworkSpec, RunningFace, Service};
use cloudsim::{SecurityGroupConfig, SimCloud, SimConfig};
use pool_manager::cloud::CloudError;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Simulated seconds become milliseconds x2: boot 50 ms, mysqld +70 ms,
/// volume create 6 ms, attach 4 ms, port attach 3 ms, delete 4 ms. No
/// server greets ([`with_mysqld`] for a test that needs one): a local
/// MySQL holding the simulated mysqld's port on every address would stop
/// the face from starting.
fn config() -> SimConfig {
    SimConfig {
        time_scale: 0.002,
        jitter: 0.0,
        listeners: false,
        ..SimConfig::default()
    }
}

/// [`config`] whose servers greet as mysqld at their own addresses.
fn with_mysqld() -> SimConfig {
    SimConfig {
        listeners: true,
        ..config()
    }
}

struct Env {
    sim: Arc<SimCloud>,
    face: RunningFace,
    http: reqwest::Client,
    token: String,
}

/// A response: status, headers, body text.
#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    fn expect(self, status: u16) -> Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        self
    }
}

/// A cloud that only soft-deletes, reclaiming after `reclaim`.
async fn soft_deleting_cloud(reclaim: Duration) -> Env {
    let settings = HttpSettings {
        reclaim_instance_interval: reclaim,
        ..HttpSettings::default()
    };
    start_with(config(), settings).await
}

async fn start_with(config: SimConfig, settings: HttpSettings) -> Env {
    let sim = SimCloud::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let face = HttpFace::serve(sim.clone(), settings, listener)
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut env = Env {
        sim,
        face,
        http,
        token: String::new(),
    };
    env.token = env.issue_token("pool", "poolpass").await.unwrap();
    env
}

async fn start() -> Env {
    start_with(config(), HttpSettings::default()).await
}

fn auth_body(user: &str, password: &str) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": "service", "domain": {"name": "Default"}}},
    }})
}

impl Env {
    fn url(&self, service: Service, path: &str) -> String {
        format!("{}{path}", self.face.service_url(service))
    }

    async fn issue_token(&self, user: &str, password: &str) -> Result<String, Resp> {
        let r = self
            .raw(
                Method::POST,
                &self.url(Service::Identity, "/v3/auth/tokens"),
                &[],
                Some(auth_body(user, password).to_string()),
            )
            .await;
        if r.status == StatusCode::CREATED {
            Ok(r.header("x-subject-token").unwrap().to_string())
        } else {
            Err(r)
        }
    }

    async fn raw(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Resp {
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        Resp {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    /// An authenticated call; `mv` is Nova's microversion (ignored elsewhere).
    async fn call(
        &self,
        method: Method,
        service: Service,
        path: &str,
        mv: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut headers = vec![("x-auth-token", self.token.as_str())];
        if let Some(v) = mv {
            headers.push(("x-openstack-nova-api-version", v));
        }
        self.raw(
            method,
            &self.url(service, path),
            &headers,
            body.map(|b| b.to_string()),
        )
        .await
    }

    async fn get(&self, service: Service, path: &str, mv: Option<&str>) -> Resp {
        self.call(Method::GET, service, path, mv, None).await
    }

    async fn post(&self, service: Service, path: &str, mv: Option<&str>, body: Value) -> Resp {
        self.call(Method::POST, service, path, mv, Some(body)).await
    }

    async fn delete(&self, service: Service, path: &str, mv: Option<&str>) -> Resp {
        self.call(Method::DELETE, service, path, mv, None).await
    }

    async fn image_id(&self) -> String {
        let r = self
            .get(Service::Image, "/v2/images?name=mysql-8.0", None)
            .await
            .expect(200)
            .json();
        let active = r["images"].as_array().unwrap().iter();
        let active: Vec<&Value> = active.filter(|i| i["status"] == "active").collect();
        assert_eq!(active.len(), 1, "{r}");
        active[0]["id"].as_str().unwrap().to_string()
    }

    async fn network_id(&self, name: &str) -> String {
        let r = self
            .get(
                Service::Network,
                &format!("/v2.0/networks?name={name}"),
                None,
            )
            .await
            .expect(200)
            .json();
        assert_eq!(r["networks"].as_array().unwrap().len(), 1, "{r}");
        r["networks"][0]["id"].as_str().unwrap().to_string()
    }

    async fn flavor_id(&self, name: &str) -> String {
        let r = self
            .get(Service::Compute, "/v2.1/flavors/detail", Some("2.61"))
            .await
            .expect(200)
            .json();
        r["flavors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn server_body(&self, name: &str, az: &str) -> Value {
        json!({"server": {
            "name": name,
            "flavorRef": self.flavor_id("db.small").await,
            "imageRef": self.image_id().await,
            "networks": [{"uuid": self.network_id("mgmt-net").await}],
            "availability_zone": az,
            "metadata": {"warmpool.pool": "db.small/az1"},
        }})
    }

    async fn boot(&self, name: &str, mv: &str, tags: &[&str]) -> String {
        let mut body = self.server_body(name, "az1").await;
        if !tags.is_empty() {
            body["server"]["tags"] = json!(tags);
        }
        let r = self
            .post(Service::Compute, "/v2.1/servers", Some(mv), body)
            .await
            .expect(202);
        r.json()["server"]["id"].as_str().unwrap().to_string()
    }

    async fn server(&self, id: &str, mv: &str) -> Value {
        self.get(Service::Compute, &format!("/v2.1/servers/{id}"), Some(mv))
            .await
            .expect(200)
            .json()["server"]
            .clone()
    }

    async fn wait_server(&self, id: &str, status: &str) -> Value {
        wait_until(|| async {
            let s = self.server(id, "2.79").await;
            (s["status"] == status).then_some(s)
        })
        .await
    }

    async fn active_server(&self, name: &str) -> String {
        let id = self.boot(name, "2.52", &[]).await;
        self.wait_server(&id, "ACTIVE").await;
        id
    }

    async fn volume(&self, id: &str) -> Resp {
        self.get(Service::Volume, &format!("/v3/volumes/{id}"), None)
            .await
    }

    async fn wait_volume(&self, id: &str, status: &str) -> Value {
        wait_until(|| async {
            let v = self.volume(id).await.expect(200).json()["volume"].clone();
            (v["status"] == status).then_some(v)
        })
        .await
    }

    async fn available_volume(&self, name: &str) -> String {
        let r = self
            .post(
                Service::Volume,
                "/v3/volumes",
                None,
                json!({"volume": {"size": 1, "name": name, "availability_zone": "az1"}}),
            )
            .await
            .expect(202)
            .json();
        assert_eq!(r["volume"]["status"], "creating");
        let id = r["volume"]["id"].as_str().unwrap().to_string();
        self.wait_volume(&id, "available").await;
        id
    }

    async fn port(&self, name: &str) -> String {
        let net = self.network_id("tenant-net").await;
        let r = self
            .post(
                Service::Network,
                "/v2.0/ports",
                None,
                json!({"port": {"network_id": net, "name": name}}),
            )
            .await
            .expect(201)
            .json();
        assert_eq!(r["port"]["status"], "DOWN");
        r["port"]["id"].as_str().unwrap().to_string()
    }
}

/// Polls every 5 ms for up to 5 s.
async fn wait_until<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---- Keystone --------------------------------------------------------------

#[tokio::test]
async fn token_is_issued_with_catalog_and_subject_header() {
    let env = start().await;
    let r = env
        .raw(
            Method::POST,
            &env.face.auth_url().replace("/v3", "/v3/auth/tokens"),
            &[],
            Some(auth_body("pool", "poolpass").to_string()),
        )
        .await
        .expect(201);
    assert!(r.header("x-subject-token").unwrap().len() > 32);
    let t = &r.json()["token"];
    assert_eq!(t["methods"], json!(["password"]));
    assert_eq!(t["user"]["name"], "pool");
    assert_eq!(t["project"]["name"], "service");
    assert_eq!(t["project"]["id"], env.face.project_id());
    assert_eq!(t["project"]["domain"]["name"], "Default");
    assert!(t["roles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "member"));
    assert!(t["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(t["issued_at"].as_str().unwrap().ends_with('Z'));
    let catalog = t["catalog"].as_array().unwrap();
    let url_of = |kind: &str| -> String {
        let entry = catalog
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in catalog"));
        let ep = &entry["endpoints"][0];
        assert_eq!(ep["interface"], "public");
        assert_eq!(ep["region"], "RegionOne");
        assert_eq!(ep["region_id"], "RegionOne");
        ep["url"].as_str().unwrap().to_string()
    };
    let base = env.face.base_url();
    assert_eq!(url_of("identity"), format!("{base}/identity/v3/"));
    assert_eq!(url_of("compute"), format!("{base}/compute/v2.1"));
    let volume = format!("{base}/volume/v3/{}", env.face.project_id());
    assert_eq!(url_of("volumev3"), volume);
    assert_eq!(url_of("block-storage"), volume);
    assert_eq!(url_of("network"), format!("{base}/network"));
    assert_eq!(url_of("image"), format!("{base}/image"));

    // Validation of the token through Keystone.
    let token = r.header("x-subject-token").unwrap().to_string();
    let v = env
        .raw(
            Method::GET,
            &env.url(Service::Identity, "/v3/auth/tokens"),
            &[("x-auth-token", &env.token), ("x-subject-token", &token)],
            None,
        )
        .await
        .expect(200);
    assert_eq!(v.json()["token"]["user"]["name"], "pool");

    // Every service has a public, an internal and an admin endpoint, as a
    // real catalog lists them; the token's catalog is Keystone's answer to
    // GET /v3/auth/catalog too.
    let compute = catalog.iter().find(|e| e["type"] == "compute").unwrap();
    let interfaces: Vec<&str> = compute["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["interface"].as_str().unwrap())
        .collect();
    assert_eq!(interfaces, ["public", "internal", "admin"]);
    let c = env
        .raw(
            Method::GET,
            &env.url(Service::Identity, "/v3/auth/catalog"),
            &[("x-auth-token", &token)],
            None,
        )
        .await
        .expect(200);
    assert_eq!(&c.json()["catalog"], &t["catalog"]);
}

/// `region_order` lists a type's endpoints in the regions it names, in
/// its order, and `other_regions_host` puts the other regions' at another
/// host, so a test sees which region a client's call went to.
#[tokio::test]
async fn catalog_regions_in_a_per_type_order_at_another_host() {
    let env = start_with(
        config(),
        HttpSettings {
            other_regions: vec!["RegionTwo".into()],
            other_regions_host: Some("127.0.0.2".into()),
            region_order: BTreeMap::from([
                (
                    "network",
                    vec!["RegionTwo".to_owned(), "RegionOne".to_owned()],
                ),
                ("image", vec!["RegionOne".to_owned()]),
            ]),
            interfaces: vec!["public"],
            ..HttpSettings::default()
        },
    )
    .await;
    let c = env
        .raw(
            Method::GET,
            &env.url(Service::Identity, "/v3/auth/catalog"),
            &[("x-auth-token", &env.token)],
            None,
        )
        .await
        .expect(200);
    let catalog = c.json()["catalog"].clone();
    let endpoints = |kind: &str| -> Vec<(String, String)> {
        catalog
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap()["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["region"].as_str().unwrap().to_owned(),
                    e["url"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let base = env.face.base_url();
    let elsewhere = base.replace("127.0.0.1", "127.0.0.2");
    assert_eq!(
        endpoints("compute"),
        [
            ("RegionOne".to_owned(), format!("{base}/compute/v2.1")),
            ("RegionTwo".to_owned(), format!("{elsewhere}/compute/v2.1")),
        ]
    );
    assert_eq!(
        endpoints("network"),
        [
            ("RegionTwo".to_owned(), format!("{elsewhere}/network")),
            ("RegionOne".to_owned(), format!("{base}/network")),
        ]
    );
    assert_eq!(
        endpoints("image"),
        [("RegionOne".to_owned(), format!("{base}/image"))]
    );
}

#[tokio::test]
async fn wrong_password_missing_and_unknown_tokens_are_401() {
    let env = start().await;
    let r = env
        .issue_token("pool", "wrong")
        .await
        .unwrap_err()
        .expect(401);
    assert_eq!(
        r.json(),
        json!({"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}})
    );
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        format!("Keystone uri=\"{}/identity/v3\"", env.face.base_url())
    );
    assert_eq!(
        env.issue_token("nobody", "poolpass")
            .await
            .unwrap_err()
            .status,
        401
    );

    // Services: no token, unknown token.
    for (service, path) in [
        (Service::Compute, "/v2.1/servers"),
        (Service::Volume, "/v3/volumes"),
        (Service::Network, "/v2.0/ports"),
        (Service::Image, "/v2/images"),
    ] {
        let r = env
            .raw(Method::GET, &env.url(service, path), &[], None)
            .await
            .expect(401);
        assert_eq!(r.json()["error"]["code"], 401, "{service:?}");
        // keystonemiddleware names Keystone's root.
        assert_eq!(
            r.header("www-authenticate").unwrap(),
            format!("Keystone uri=\"{}/identity\"", env.face.base_url())
        );
        env.raw(
            Method::GET,
            &env.url(service, path),
            &[("x-auth-token", "gAAAAABnot-a-token")],
            None,
        )
        .await
        .expect(401);
        env.get(service, path, None).await.expect(200);
    }

    // Malformed auth body: Keystone's 400 naming the problem.
    let r = env
        .raw(
            Method::POST,
            &env.url(Service::Identity, "/v3/auth/tokens"),
            &[],
            Some("{\"auth\": ".into()),
        )
        .await
        .expect(400);
    let j = r.json();
    assert_eq!(j["error"]["code"], 400);
    assert!(
        j["error"]["message"].as_str().unwrap().contains("JSON"),
        "{j}"
    );
}

/// Moves tokio's clock, which the face's tokens expire on, `by` ahead at
/// once: what passes in real time meanwhile cannot decide the outcome.
async fn jump_clock(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn tokens_expire_and_can_be_revoked() {
    let lifetime = Duration::from_secs(600);
    let settings = HttpSettings {
        token_lifetime: lifetime,
        ..HttpSettings::default()
    };
    let mut env = start_with(config(), settings).await;
    env.get(Service::Compute, "/v2.1/servers", None)
        .await
        .expect(200);
    jump_clock(lifetime).await;
    env.get(Service::Compute, "/v2.1/servers", None)
        .await
        .expect(401);
    // Re-authentication works.
    env.token = env.issue_token("pool", "poolpass").await.unwrap();
    env.get(Service::Compute, "/v2.1/servers", None)
        .await
        .expect(200);

    // Revoking every token: 401 until the next authentication.
    env.face.faults().revoke_all_tokens();
    env.get(Service::Volume, "/v3/volumes", None)
        .await
        .expect(401);
    env.token = env.issue_token("pool", "poolpass").await.unwrap();
    env.get(Service::Volume, "/v3/volumes", None)
        .await
        .expect(200);

    // Revoking one token through Keystone.
    let other = env.issue_token("pool", "poolpass").await.unwrap();
    env.raw(
        Method::DELETE,
        &env.url(Service::Identity, "/v3/auth/tokens"),
        &[("x-auth-token", &env.token), ("x-subject-token", &other)],
        None,
    )
    .await
    .expect(204);
    env.raw(
        Method::GET,
        &env.url(Service::Network, "/v2.0/networks"),
        &[("x-auth-token", &other)],
        None,
    )
    .await
    .expect(401);
    env.get(Service::Network, "/v2.0/networks", None)
        .await
        .expect(200);
}

// ---- version documents -----------------------------------------------------

#[tokio::test]
async fn version_documents_are_shaped_for_osauth() {
    let env = start().await;
    let base = env.face.base_url().to_string();
    let get = |url: String| {
        let env = &env;
        async move { env.raw(Method::GET, &url, &[], None).await }
    };

    let r = get(format!("{base}/identity")).await.expect(300).json();
    assert_eq!(r["versions"]["values"][0]["id"], "v3.14");
    let r = get(format!("{base}/identity/v3")).await.expect(200).json();
    assert_eq!(r["version"]["status"], "stable");
    assert_eq!(
        r["version"]["links"][0]["href"],
        format!("{base}/identity/v3/")
    );

    let r = get(format!("{base}/compute/v2.1")).await.expect(200).json();
    let v = &r["version"];
    assert_eq!(v["id"], "v2.1");
    assert_eq!(v["status"], "CURRENT");
    assert_eq!(v["min_version"], "2.1");
    assert_eq!(v["version"], "2.104");
    let self_link = v["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "self")
        .unwrap();
    assert_eq!(self_link["href"], format!("{base}/compute/v2.1/"));
    let r = get(format!("{base}/compute")).await.expect(200).json();
    assert_eq!(r["versions"][0]["version"], "2.104");

    // Cinder: the catalog URL (with the project) is webob's 404; its parent
    // redirects to `/v3/`, the version document, which needs a token; the
    // root is 300 without one.
    let r = get(format!("{base}/volume/v3/{}", env.face.project_id()))
        .await
        .expect(404);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text.contains("<h1>404 Not Found</h1>"));
    get(format!("{base}/volume/v3/")).await.expect(401);
    let r = env
        .raw(
            Method::GET,
            &format!("{base}/volume/v3"),
            &[("x-auth-token", &env.token)],
            None,
        )
        .await
        .expect(200);
    assert_eq!(r.header("openstack-api-version"), Some("volume 3.0"));
    let r = r.json();
    let v = &r["versions"][0];
    assert_eq!(v["id"], "v3.0");
    assert_eq!(v["min_version"], "3.0");
    assert_eq!(v["version"], "3.71");
    assert!(v["links"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["rel"] == "self" && l["href"] == format!("{base}/volume/v3/")));
    get(format!("{base}/volume")).await.expect(300);
    // Nova answers unrouted URLs with webob's page, Neutron in JSON.
    let r = env
        .get(Service::Compute, "/v2.1/no-such-thing", None)
        .await
        .expect(404);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let r = env
        .get(Service::Network, "/v2.0/no-such-thing", None)
        .await
        .expect(404);
    assert_eq!(
        r.json(),
        json!({"NeutronError": {"type": "HTTPNotFound", "message": "The resource could not be found.", "detail": ""}})
    );
    let r = env
        .get(
            Service::Image,
            "/v2/images/00000000-0000-0000-0000-000000000000",
            None,
        )
        .await
        .expect(404);
    assert!(r
        .text
        .contains("No image found with ID 00000000-0000-0000-0000-000000000000"));

    let r = get(format!("{base}/network")).await.expect(200).json();
    assert_eq!(r["versions"][0]["id"], "v2.0");
    assert_eq!(
        r["versions"][0]["links"][0]["href"],
        format!("{base}/network/v2.0/")
    );
    let r = get(format!("{base}/image")).await.expect(300).json();
    assert_eq!(
        r["versions"][0]["links"][0]["href"],
        format!("{base}/image/v2/")
    );
}

/// Cinder routes its API without the project id only from 3.67 (Yoga):
/// an older one answers such a URL with webob's 404 page, after the token
/// check; under the project id every version answers.
#[tokio::test]
async fn cinder_before_3_67_has_no_routes_without_the_project_id() {
    for (max, project_less) in [((3, 71), 200), ((3, 67), 200), ((3, 60), 404)] {
        let env = start_with(
            config(),
            HttpSettings {
                cinder_max_version: max,
                ..HttpSettings::default()
            },
        )
        .await;
        let project = env.face.project_id().to_string();
        for path in ["/volumes/detail", "/os-availability-zone"] {
            env.get(Service::Volume, &format!("/v3/{project}{path}"), None)
                .await
                .expect(200);
            let r = env
                .get(Service::Volume, &format!("/v3{path}"), None)
                .await
                .expect(project_less);
            if project_less == 404 {
                assert!(r.header("content-type").unwrap().starts_with("text/html"));
                assert!(r.text.contains("<h1>404 Not Found</h1>"), "{}", r.text);
            }
        }
        let url = env.url(Service::Volume, "/v3/volumes");
        env.raw(Method::GET, &url, &[], None).await.expect(401);
    }
}

#[tokio::test]
async fn nova_microversion_headers_and_limits() {
    let env = start().await;
    let r = env
        .get(Service::Compute, "/v2.1/limits", Some("2.79"))
        .await
        .expect(200);
    assert_eq!(r.header("openstack-api-version"), Some("compute 2.79"));
    assert_eq!(r.header("x-openstack-nova-api-version"), Some("2.79"));
    assert!(r
        .header("vary")
        .unwrap()
        .contains("X-OpenStack-Nova-API-Version"));
    assert!(r
        .header("x-openstack-request-id")
        .unwrap()
        .starts_with("req-"));
    let abs = r.json()["limits"]["absolute"].clone();
    assert_eq!(abs["maxTotalInstances"], 200);
    assert_eq!(abs["totalInstancesUsed"], 0);
    assert_eq!(abs["maxTotalCores"], -1);
    assert_eq!(abs["totalCoresUsed"], 0);
    assert_eq!(abs["maxTotalRAMSize"], -1);
    assert_eq!(abs["totalRAMUsed"], 0);
    assert!(abs.get("maxSecurityGroups").is_none());

    // New-style header and "latest".
    let r = env
        .raw(
            Method::GET,
            &env.url(Service::Compute, "/v2.1/limits"),
            &[
                ("x-auth-token", &env.token),
                ("openstack-api-version", "compute latest"),
            ],
            None,
        )
        .await
        .expect(200);
    assert_eq!(r.header("openstack-api-version"), Some("compute 2.104"));
    // No header: 2.1, with the pre-2.36 limits.
    let r = env
        .get(Service::Compute, "/v2.1/limits", None)
        .await
        .expect(200);
    assert_eq!(r.header("x-openstack-nova-api-version"), Some("2.1"));
    assert_eq!(r.json()["limits"]["absolute"]["maxSecurityGroups"], 10);

    env.active_server("limits").await;
    let abs = env
        .get(Service::Compute, "/v2.1/limits", Some("2.79"))
        .await
        .json()["limits"]["absolute"]
        .clone();
    assert_eq!(abs["totalInstancesUsed"], 1);
    assert_eq!(abs["totalCoresUsed"], 1);
    assert_eq!(abs["totalRAMUsed"], 1024);

    // Flavors carry ids, sizes.
    let r = env
        .get(Service::Compute, "/v2.1/flavors", None)
        .await
        .expect(200)
        .json();
    assert_eq!(r["flavors"].as_array().unwrap().len(), 3);
    let large = env.flavor_id("db.large").await;
    let f = env
        .get(
            Service::Compute,
            &format!("/v2.1/flavors/{large}"),
            Some("2.61"),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(f["flavor"]["vcpus"], 4);
    assert_eq!(f["flavor"]["ram"], 8192);
    assert_eq!(f["flavor"]["disk"], 40);
    // A flavor name is not an id.
    let r = env
        .get(Service::Compute, "/v2.1/flavors/db.large", None)
        .await
        .expect(404);
    assert_eq!(
        r.json(),
        json!({"itemNotFound": {"code": 404, "message": "Flavor db.large could not be found."}})
    );

    // Cinder echoes its microversion.
    let r = env
        .raw(
            Method::GET,
            &env.url(Service::Volume, "/v3/volumes"),
            &[
                ("x-auth-token", &env.token),
                ("openstack-api-version", "volume 3.60"),
            ],
            None,
        )
        .await
        .expect(200);
    assert_eq!(r.header("openstack-api-version"), Some("volume 3.60"));
    // A tenant's volume is another project's: none of this one's quota.
    env.sim.create_volume_for_test("tenant", "az1", 5);
    let r = env
        .get(Service::Volume, "/v3/limits", None)
        .await
        .expect(200)
        .json();
    assert_eq!(r["limits"]["absolute"]["maxTotalVolumes"], 1000);
    assert_eq!(r["limits"]["absolute"]["totalVolumesUsed"], 0);
    assert_eq!(r["limits"]["absolute"]["totalGigabytesUsed"], 0);
}

// ---- the full flow ---------------------------------------------------------

#[tokio::test]
async fn boot_attach_detach_delete_flow() {
    // Transitions slow enough (200-300 ms) to see the intermediate states
    // reliably on a loaded machine.
    let mut cfg = with_mysqld();
    cfg.boot.t_alone = Duration::from_secs(100);
    cfg.latencies.volume_attach = Duration::from_secs(150);
    cfg.latencies.volume_detach = Duration::from_secs(150);
    let env = start_with(cfg, HttpSettings::default()).await;
    let sid = env.boot("flow", "2.52", &["pool-db.small"]).await;
    let s = env.server(&sid, "2.79").await;
    assert_eq!(s["status"], "BUILD");
    assert_eq!(s["OS-EXT-STS:task_state"], "spawning");
    let s = env.wait_server(&sid, "ACTIVE").await;
    assert_eq!(s["OS-EXT-AZ:availability_zone"], "az1");
    assert_eq!(s["metadata"]["warmpool.pool"], "db.small/az1");
    assert_eq!(s["tags"], json!(["pool-db.small"]));
    assert_eq!(s["flavor"]["original_name"], "db.small");
    assert_eq!(s["flavor"]["vcpus"], 1);
    let addr = &s["addresses"]["mgmt-net"][0];
    assert_eq!(addr["version"], 4);
    assert_eq!(addr["OS-EXT-IPS:type"], "fixed");
    assert!(
        addr["addr"].as_str().unwrap().starts_with("127.77."),
        "{addr}"
    );
    assert!(s.get("fault").is_none());

    // Fields of later microversions, as Nova 34 shows them.
    let s101 = env.server(&sid, "2.101").await;
    assert_eq!(s101["pinned_availability_zone"], "az1");
    assert_eq!(s101["image"]["properties"], json!({}));
    assert_eq!(s101["scheduler_hints"], json!({}));
    assert!(s.get("pinned_availability_zone").is_none());

    // Volume attach below 2.101: 200 with the attachment.
    let v1 = env.available_volume("warmpool-order-1").await;
    // Cinder: links follow the request's URL (no project id here); fields
    // appear with the microversion.
    let plain = env.volume(&v1).await.expect(200).json();
    assert_eq!(
        plain["volume"]["links"][0]["href"],
        format!("{}/volume/v3/volumes/{v1}", env.face.base_url())
    );
    assert!(plain["volume"].get("shared_targets").is_none());
    let r = env
        .raw(
            Method::GET,
            &env.url(Service::Volume, &format!("/v3/volumes/{v1}")),
            &[
                ("x-auth-token", &env.token),
                ("openstack-api-version", "volume 3.60"),
            ],
            None,
        )
        .await
        .expect(200);
    assert_eq!(r.header("openstack-api-version"), Some("volume 3.60"));
    let v = r.json();
    assert_eq!(v["volume"]["shared_targets"], false);
    assert!(v["volume"].get("group_id").is_some());
    assert!(v["volume"].get("volume_type_id").is_none());
    let r = env
        .post(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-volume_attachments"),
            Some("2.79"),
            json!({"volumeAttachment": {"volumeId": v1}}),
        )
        .await
        .expect(200)
        .json();
    let a = &r["volumeAttachment"];
    assert_eq!(a["volumeId"], v1.as_str());
    assert_eq!(a["serverId"], sid.as_str());
    assert_eq!(a["device"], "/dev/vdb");
    assert_eq!(a["delete_on_termination"], false);
    assert_eq!(
        env.volume(&v1).await.json()["volume"]["status"],
        "attaching"
    );
    let vol = env.wait_volume(&v1, "in-use").await;
    assert_eq!(vol["attachments"][0]["server_id"], sid.as_str());
    assert_eq!(vol["attachments"][0]["device"], "/dev/vdb");

    // At 2.101 and later: 202 with an empty body, completion seen in Cinder.
    let v2 = env.available_volume("warmpool-order-2").await;
    let r = env
        .post(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-volume_attachments"),
            Some("2.101"),
            json!({"volumeAttachment": {"volumeId": v2}}),
        )
        .await
        .expect(202);
    assert_eq!(r.text, "");
    env.wait_volume(&v2, "in-use").await;
    let r = env
        .get(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-volume_attachments"),
            Some("2.79"),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(r["volumeAttachments"].as_array().unwrap().len(), 2);
    let s = env.server(&sid, "2.79").await;
    assert_eq!(
        s["os-extended-volumes:volumes_attached"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Port attach: synchronous, bound when it answers.
    let port = env.port("warmpool-order-1").await;
    let r = env
        .post(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-interface"),
            Some("2.79"),
            json!({"interfaceAttachment": {"port_id": port}}),
        )
        .await
        .expect(200)
        .json();
    let ia = &r["interfaceAttachment"];
    assert_eq!(ia["port_id"], port.as_str());
    assert_eq!(ia["port_state"], "ACTIVE");
    let ip = ia["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let p = env
        .get(Service::Network, &format!("/v2.0/ports/{port}"), None)
        .await
        .expect(200)
        .json();
    assert_eq!(p["port"]["device_id"], sid.as_str());
    assert_eq!(p["port"]["status"], "ACTIVE");
    assert_eq!(p["port"]["device_owner"], "compute:az1");
    let s = env.server(&sid, "2.79").await;
    assert_eq!(s["addresses"]["tenant-net"][0]["addr"], ip.as_str());
    let r = env
        .get(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-interface"),
            None,
        )
        .await
        .expect(200)
        .json();
    assert_eq!(r["interfaceAttachments"][0]["port_id"], port.as_str());
    let r = env
        .get(
            Service::Network,
            &format!("/v2.0/ports?device_id={sid}"),
            None,
        )
        .await
        .expect(200)
        .json();
    // The port attached, and the one Nova made for the server as it booted
    // it: unnamed, on the network it was booted on.
    let ports = r["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2, "{ports:?}");
    let own = ports.iter().find(|p| p["id"] != port.as_str()).unwrap();
    assert_eq!(own["name"], "");
    assert_eq!(own["network_id"], env.network_id("mgmt-net").await.as_str());
    assert_eq!(own["device_owner"], "compute:az1");
    let own = own["id"].as_str().unwrap().to_owned();

    // Detach both.
    env.delete(
        Service::Compute,
        &format!("/v2.1/servers/{sid}/os-interface/{port}"),
        None,
    )
    .await
    .expect(202);
    wait_until(|| async {
        let p = env
            .get(Service::Network, &format!("/v2.0/ports/{port}"), None)
            .await
            .json();
        (p["port"]["device_id"] == "").then_some(())
    })
    .await;
    env.delete(
        Service::Compute,
        &format!("/v2.1/servers/{sid}/os-volume_attachments/{v1}"),
        None,
    )
    .await
    .expect(202);
    assert_eq!(
        env.volume(&v1).await.json()["volume"]["status"],
        "detaching"
    );
    env.wait_volume(&v1, "available").await;

    // Delete: 204, then 404; the remaining volume returns to available.
    env.delete(Service::Compute, &format!("/v2.1/servers/{sid}"), None)
        .await
        .expect(204);
    wait_until(|| async {
        let r = env
            .get(Service::Compute, &format!("/v2.1/servers/{sid}"), None)
            .await;
        (r.status == 404).then_some(())
    })
    .await;
    // Nova deleted the port it made, with the server.
    env.get(Service::Network, &format!("/v2.0/ports/{own}"), None)
        .await
        .expect(404);
    env.wait_volume(&v2, "available").await;
    for v in [&v1, &v2] {
        env.delete(Service::Volume, &format!("/v3/volumes/{v}"), None)
            .await
            .expect(202);
    }
    wait_until(|| async { (env.volume(&v1).await.status == 404).then_some(()) }).await;
    env.delete(Service::Network, &format!("/v2.0/ports/{port}"), None)
        .await
        .expect(204);
    env.get(Service::Network, &format!("/v2.0/ports/{port}"), None)
        .await
        .expect(404);
    // The project id form of Cinder's URLs works too.
    let pid = env.face.project_id().to_string();
    env.get(
        Service::Volume,
        &format!("/v3/{pid}/volumes/detail?name=warmpool-order-2"),
        None,
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn readiness_greeting_at_the_servers_address() {
    let env = start_with(with_mysqld(), HttpSettings::default()).await;
    let sid = env.boot("ready", "2.52", &[]).await;
    let s = env.wait_server(&sid, "ACTIVE").await;
    let ip = s["addresses"]["mgmt-net"][0]["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let addr: std::net::SocketAddr = format!("{ip}:3306").parse().unwrap();
    let probe = pool_manager::probe::MysqlGreetingProbe::default();
    let version = wait_until(|| async {
        use pool_manager::probe::Probe;
        probe.probe(addr).await.ok()
    })
    .await;
    assert_eq!(version, "8.0.36-cloudsim");
    // Deleting the server stops its mysqld.
    env.delete(Service::Compute, &format!("/v2.1/servers/{sid}"), None)
        .await
        .expect(204);
    wait_until(|| async {
        use pool_manager::probe::Probe;
        probe.probe(addr).await.is_err().then_some(())
    })
    .await;
}

/// A port something holds on every address (a wildcard bind: a local
/// MySQL, `docker run -p 3306:3306`) leaves no server's own address to
/// greet on: the face refuses to start, naming the port, rather than serve
/// a cloud that answers every create 500. Taken after the start, a
/// create answers 500 naming the cause.
#[tokio::test]
async fn a_mysql_port_taken_on_every_address_is_refused_at_start() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let settings = || HttpSettings {
        mysql_port: port,
        ..HttpSettings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = HttpFace::serve(SimCloud::new(with_mysqld()), settings(), listener)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, cloudsim::http::HttpError::MysqlPortTaken { port: p, .. } if *p == port),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("port {port} is taken on every address")),
        "{err}"
    );

    drop(taken);
    let env = start_with(with_mysqld(), settings()).await;
    let _taken = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    let body = env.server_body("late", "az1").await;
    let r = env
        .post(Service::Compute, "/v2.1/servers", Some("2.52"), body)
        .await
        .expect(500);
    assert!(
        r.text.contains("cannot reserve a loopback address"),
        "{}",
        r.text
    );
}

/// Nova's `?name=` is a regular expression searched for in the name (its
/// database's REGEXP), not a substring: a client wanting a literal name
/// escapes it, as warmpool's driver does.
#[tokio::test]
async fn the_name_filter_is_a_regex() {
    let env = start().await;
    let dotted = env.boot("wp.db+1", "2.52", &[]).await;
    let other = env.boot("wpXdb1", "2.52", &[]).await;
    let listed = |query: &'static str| {
        let env = &env;
        async move {
            let r = env
                .get(
                    Service::Compute,
                    &format!("/v2.1/servers?name={query}"),
                    None,
                )
                .await
                .expect(200)
                .json();
            let mut ids: Vec<String> = r["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    // `wp\.db\+1`, URL-encoded.
    assert_eq!(listed("wp%5C.db%5C%2B1").await, vec![dotted.clone()]);
    let mut both = vec![dotted.clone(), other.clone()];
    both.sort();
    assert_eq!(listed("wp.db").await, both);
    // Unescaped, `+` repeats the `b`: the name finds the other server, not
    // its own.
    assert_eq!(listed("%5Ewp.db%2B1%24").await, vec![other]);
    let r = env
        .get(Service::Compute, "/v2.1/servers?name=wp(", None)
        .await
        .expect(400);
    assert!(r.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("wp("));
}

#[tokio::test]
async fn tag_filter_is_honoured_from_2_26_and_ignored_below() {
    let mut cfg = config();
    // 20 s in BUILD, unless the clock is moved: a busy machine's delays
    // cannot end the build before the 409 below.
    cfg.boot.t_alone = Duration::from_secs(10_000);
    let env = start_with(cfg, HttpSettings::default()).await;
    let a = env.boot("tagged", "2.52", &["pool-a"]).await;
    let b = env.boot("untagged", "2.52", &[]).await;
    // A tag added afterwards (2.26+): 409 while the server builds (Nova
    // tags only one no longer building), then 201 new, 204 existing; 404
    // below 2.26.
    env.call(
        Method::PUT,
        Service::Compute,
        &format!("/v2.1/servers/{b}/tags/pool-b"),
        Some("2.26"),
        None,
    )
    .await
    .expect(409);
    jump_clock(Duration::from_secs(60)).await;
    env.wait_server(&b, "ACTIVE").await;
    let r = env
        .call(
            Method::PUT,
            Service::Compute,
            &format!("/v2.1/servers/{b}/tags/pool-b"),
            Some("2.26"),
            None,
        )
        .await
        .expect(201);
    assert!(r.header("location").unwrap().ends_with("/tags/pool-b"));
    env.call(
        Method::PUT,
        Service::Compute,
        &format!("/v2.1/servers/{b}/tags/pool-b"),
        Some("2.26"),
        None,
    )
    .await
    .expect(204);
    env.call(
        Method::PUT,
        Service::Compute,
        &format!("/v2.1/servers/{b}/tags/x"),
        Some("2.25"),
        None,
    )
    .await
    .expect(404);

    let names = |r: Value| -> Vec<String> {
        r["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    let r = env
        .get(
            Service::Compute,
            "/v2.1/servers/detail?tags=pool-a",
            Some("2.26"),
        )
        .await
        .expect(200);
    let r = r.json();
    assert_eq!(names(r.clone()), vec!["tagged"]);
    assert_eq!(r["servers"][0]["tags"], json!(["pool-a"]));
    let r = env
        .get(
            Service::Compute,
            "/v2.1/servers/detail?tags=no-such-tag",
            Some("2.26"),
        )
        .await;
    assert_eq!(names(r.json()), Vec::<String>::new());
    // Below 2.26 the filter is silently ignored (and tags are not shown).
    let r = env
        .get(
            Service::Compute,
            "/v2.1/servers/detail?tags=no-such-tag",
            Some("2.19"),
        )
        .await
        .json();
    assert_eq!(names(r.clone()), vec!["untagged", "tagged"]);
    assert!(r["servers"][0].get("tags").is_none());
    // ?name= filters at any version; the summary list too.
    let r = env
        .get(Service::Compute, "/v2.1/servers?name=untagged", None)
        .await
        .json();
    assert_eq!(names(r.clone()), vec!["untagged"]);
    assert_eq!(r["servers"][0]["id"], b.as_str());
    let _ = a;
}

/// Images only Glance has (an upload queued or failed, a deactivated old
/// image) are listed by name, newer than the model's, and shown by id,
/// each in its status.
#[tokio::test]
async fn glance_shows_uploaded_images_in_their_status() {
    let env = start().await;
    let queued = env.face.faults().upload_image("mysql-8.0", "queued");
    let list = env
        .get(Service::Image, "/v2/images?name=mysql-8.0", None)
        .await
        .expect(200)
        .json();
    let shown: Vec<(&str, &str)> = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["status"].as_str().unwrap()))
        .collect();
    let active = env.image_id().await;
    assert_eq!(
        shown,
        [(queued.as_str(), "queued"), (active.as_str(), "active")]
    );
    let image = env
        .get(Service::Image, &format!("/v2/images/{queued}"), None)
        .await
        .expect(200)
        .json();
    assert_eq!(
        (&image["name"], &image["status"]),
        (&json!("mysql-8.0"), &json!("queued"))
    );
}

/// Glance pages its image list as Glance does: newest first, 25 images
/// unless the query asks for another `limit` (at most 1000), and a `next`
/// (the request's own query with the page's last id as `marker`) while a
/// page is full. A marker naming no image is a 400.
#[tokio::test]
async fn glance_pages_images_newest_first() {
    let env = start().await;
    let active = env.image_id().await;
    let uploaded: Vec<String> = (0..30)
        .map(|_| env.face.faults().upload_image("mysql-8.0", "killed"))
        .collect();
    let ids = |page: &Value| -> Vec<String> {
        page["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // The newest upload first, the model's image (the oldest) last.
    let mut newest_first: Vec<String> = uploaded.iter().rev().cloned().collect();
    newest_first.push(active.clone());

    let first = env
        .get(Service::Image, "/v2/images?name=mysql-8.0", None)
        .await
        .expect(200)
        .json();
    assert_eq!(ids(&first), newest_first[..25]);
    assert_eq!(first["first"], "/v2/images?name=mysql-8.0");
    let next = first["next"].as_str().expect("a full page links the next");
    assert_eq!(
        next,
        format!("/v2/images?name=mysql-8.0&marker={}", newest_first[24])
    );
    let second = env.get(Service::Image, next, None).await.expect(200).json();
    assert_eq!(ids(&second), newest_first[25..]);
    assert!(second.get("next").is_none(), "{second}");

    let ten = env
        .get(Service::Image, "/v2/images?name=mysql-8.0&limit=10", None)
        .await
        .expect(200)
        .json();
    assert_eq!(ids(&ten), newest_first[..10]);
    assert_eq!(
        ten["next"],
        format!(
            "/v2/images?name=mysql-8.0&limit=10&marker={}",
            newest_first[9]
        )
    );
    let all = env
        .get(Service::Image, "/v2/images?name=mysql-8.0&limit=5000", None)
        .await
        .expect(200)
        .json();
    assert_eq!(ids(&all), newest_first, "api_limit_max is 1000");
    assert!(all.get("next").is_none(), "{all}");

    let gone = "00000000-0000-0000-0000-000000000000";
    let r = env
        .get(Service::Image, &format!("/v2/images?marker={gone}"), None)
        .await
        .expect(400);
    assert!(
        r.text.contains(&format!("No image found with ID {gone}")),
        "{}",
        r.text
    );
    for limit in ["-1", "ten"] {
        env.get(Service::Image, &format!("/v2/images?limit={limit}"), None)
            .await
            .expect(400);
    }
}

/// Neutron pages networks as it pages ports when `pagination_max_limit`
/// is set: a full page links the next in `networks_links`, after the
/// marker's network; a marker naming no network is that network's 404.
#[tokio::test]
async fn neutron_pages_networks_at_its_limit() {
    let env = start_with(
        config(),
        HttpSettings {
            page_limit: Some(1),
            ..HttpSettings::default()
        },
    )
    .await;
    let mut seen = Vec::new();
    let mut path = "/v2.0/networks".to_owned();
    for _ in 0..3 {
        let page = env
            .get(Service::Network, &path, None)
            .await
            .expect(200)
            .json();
        let networks = page["networks"].as_array().unwrap();
        assert!(networks.len() <= 1, "{page}");
        seen.extend(
            networks
                .iter()
                .map(|n| n["name"].as_str().unwrap().to_owned()),
        );
        let Some(next) = page["networks_links"]
            .as_array()
            .and_then(|links| links.iter().find(|l| l["rel"] == "next"))
        else {
            break;
        };
        let href = next["href"].as_str().unwrap();
        path = href[href.find("/v2.0/").unwrap()..].to_owned();
    }
    assert_eq!(seen, ["mgmt-net", "tenant-net"]);

    let gone = "00000000-0000-0000-0000-000000000000";
    let r = env
        .get(
            Service::Network,
            &format!("/v2.0/networks?marker={gone}"),
            None,
        )
        .await
        .expect(404)
        .json();
    assert_eq!(r["NeutronError"]["type"], "NetworkNotFound", "{r}");
}

/// Neutron takes a network id in upper case as the network it names (its
/// database compares ids without case).
#[tokio::test]
async fn a_port_on_a_network_id_in_upper_case_is_on_that_network() {
    let env = start().await;
    let net = env.network_id("tenant-net").await;
    let r = env
        .post(
            Service::Network,
            "/v2.0/ports",
            None,
            json!({"port": {"network_id": net.to_uppercase(), "name": "upper"}}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(r["port"]["network_id"], net.as_str());
}

/// A port keeps the security groups its create named (by id, of the
/// project), and shows them; one created naming none has the project's
/// default group, one naming an empty list none. A name, a group that does
/// not exist or one of another project is refused as Neutron refuses it,
/// and no port is made.
#[tokio::test]
async fn a_port_keeps_the_security_groups_its_create_named() {
    let env = start_with(
        SimConfig {
            security_groups: vec![
                SecurityGroupConfig::new("default"),
                SecurityGroupConfig::new("mysql"),
                SecurityGroupConfig::of_project("web", "tenant"),
            ],
            ..config()
        },
        HttpSettings::default(),
    )
    .await;
    let net = env.network_id("tenant-net").await;
    let group = |name: &'static str| {
        let env = &env;
        async move {
            let r = env
                .get(
                    Service::Network,
                    &format!("/v2.0/security-groups?name={name}"),
                    None,
                )
                .await
                .expect(200)
                .json();
            r["security_groups"][0]["id"].as_str().unwrap().to_owned()
        }
    };
    let (default, mysql, web) = (
        group("default").await,
        group("mysql").await,
        group("web").await,
    );
    let create = |groups: Option<Value>| {
        let mut port = json!({"network_id": net, "name": "p"});
        if let Some(groups) = groups {
            port["security_groups"] = groups;
        }
        env.post(
            Service::Network,
            "/v2.0/ports",
            None,
            json!({ "port": port }),
        )
    };
    for (given, shown) in [
        (Some(json!([mysql.to_uppercase()])), json!([mysql])),
        (None, json!([default])),
        (Some(json!([])), json!([])),
    ] {
        let made = create(given.clone()).await.expect(201).json();
        assert_eq!(made["port"]["security_groups"], shown, "{given:?}");
        let id = made["port"]["id"].as_str().unwrap();
        let r = env
            .get(Service::Network, &format!("/v2.0/ports/{id}"), None)
            .await
            .expect(200)
            .json();
        assert_eq!(r["port"]["security_groups"], shown, "{given:?}");
    }
    let missing = "00000000-0000-4000-8000-000000000000";
    for absent in [missing, web.as_str()] {
        let r = create(Some(json!([mysql, absent])))
            .await
            .expect(404)
            .json();
        assert_eq!(
            r,
            json!({"NeutronError": {"type": "SecurityGroupNotFound", "message": format!("Security group {absent} does not exist"), "detail": ""}})
        );
    }
    let r = create(Some(json!(["mysql"]))).await.expect(400).json();
    assert_eq!(r["NeutronError"]["type"], "InvalidInput", "{r}");
    assert_eq!(
        r["NeutronError"]["message"],
        "Invalid input for operation: 'mysql' is not an integer or uuid.",
        "{r}"
    );
    assert_eq!(env.sim.ports().len(), 3);
}

/// On a network without port security, ML2 refuses a port create naming
/// any group (its 400, after the request reached it: counted as a call),
/// and a port made naming none, or an empty list, has no group.
#[tokio::test]
async fn a_network_without_port_security_takes_no_security_groups() {
    let mut settings = HttpSettings::default();
    settings.networks.push(NetworkSpec {
        port_security_enabled: false,
        ..NetworkSpec::new("open-net", "10.8.0.0/16", "10.8.0.1", true)
    });
    let env = start_with(
        SimConfig {
            security_groups: vec![
                SecurityGroupConfig::new("default"),
                SecurityGroupConfig::new("mysql"),
            ],
            ..config()
        },
        settings,
    )
    .await;
    let net = env.network_id("open-net").await;
    let shown = env
        .get(Service::Network, &format!("/v2.0/networks/{net}"), None)
        .await
        .expect(200)
        .json();
    assert_eq!(shown["network"]["port_security_enabled"], false, "{shown}");
    let groups = env
        .get(Service::Network, "/v2.0/security-groups?name=mysql", None)
        .await
        .expect(200)
        .json();
    let mysql = groups["security_groups"][0]["id"].clone();
    let create = |groups: Option<Value>| {
        let mut port = json!({"network_id": net, "name": "p"});
        if let Some(groups) = groups {
            port["security_groups"] = groups;
        }
        env.post(
            Service::Network,
            "/v2.0/ports",
            None,
            json!({ "port": port }),
        )
    };
    let r = create(Some(json!([mysql]))).await.expect(400).json();
    assert_eq!(
        r,
        json!({"NeutronError": {"type": "PortSecurityAndIPRequiredForSecurityGroups", "message": "Port security must be enabled and port must have an IP address in order to use security groups.", "detail": ""}})
    );
    assert_eq!(env.sim.call_counts().get("create_port"), Some(&1));
    assert!(env.sim.ports().is_empty());
    for given in [None, Some(json!([]))] {
        let made = create(given.clone()).await.expect(201).json();
        assert_eq!(made["port"]["security_groups"], json!([]), "{given:?}");
        assert_eq!(made["port"]["port_security_enabled"], false, "{given:?}");
    }
    assert_eq!(env.sim.call_counts().get("create_port"), Some(&3));
}

/// Neutron shows a network asked for by its id in upper case (the id in
/// the path is compared by the database, without case), under the id it
/// stores.
#[tokio::test]
async fn a_network_shown_by_its_id_in_upper_case_is_that_network() {
    let env = start().await;
    let net = env.network_id("tenant-net").await;
    let r = env
        .get(
            Service::Network,
            &format!("/v2.0/networks/{}", net.to_uppercase()),
            None,
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        (&r["network"]["id"], &r["network"]["name"]),
        (&json!(net), &json!("tenant-net"))
    );
}

// ---- error cases -----------------------------------------------------------

#[tokio::test]
async fn nova_request_errors_have_real_bodies() {
    let env = start().await;
    let missing = "00000000-0000-0000-0000-000000000000";
    let r = env
        .get(Service::Compute, &format!("/v2.1/servers/{missing}"), None)
        .await
        .expect(404);
    assert_eq!(
        r.json(),
        json!({"itemNotFound": {"code": 404, "message": format!("Instance {missing} could not be found.")}})
    );
    let r = env
        .delete(Service::Compute, &format!("/v2.1/servers/{missing}"), None)
        .await
        .expect(404);
    assert_eq!(r.json()["itemNotFound"]["code"], 404);

    // Image given by name: 400 even though an image of that name exists.
    let mut body = env.server_body("x", "az1").await;
    body["server"]["imageRef"] = json!("mysql-8.0");
    let r = env
        .post(Service::Compute, "/v2.1/servers", Some("2.52"), body)
        .await
        .expect(400);
    let msg = r.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.starts_with("Invalid input for field/attribute imageRef"),
        "{msg}"
    );

    // networks required from 2.37; tags accepted from 2.52.
    let mut body = env.server_body("x", "az1").await;
    body["server"].as_object_mut().unwrap().remove("networks");
    let r = env
        .post(
            Service::Compute,
            "/v2.1/servers",
            Some("2.37"),
            body.clone(),
        )
        .await
        .expect(400);
    assert!(r.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("'networks' is a required property"));
    env.post(Service::Compute, "/v2.1/servers", Some("2.36"), body)
        .await
        .expect(202);
    let mut body = env.server_body("x", "az1").await;
    body["server"]["tags"] = json!(["t"]);
    let r = env
        .post(Service::Compute, "/v2.1/servers", Some("2.51"), body)
        .await
        .expect(400);
    assert!(r.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("'tags' was unexpected"));

    // Unknown availability zone.
    let body = env.server_body("x", "az9").await;
    let r = env
        .post(Service::Compute, "/v2.1/servers", Some("2.52"), body)
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"badRequest": {"code": 400, "message": "The requested availability zone is not available"}})
    );

    // Malformed JSON names the problem.
    let r = env
        .raw(
            Method::POST,
            &env.url(Service::Compute, "/v2.1/servers"),
            &[("x-auth-token", &env.token)],
            Some("{\"server\": [".into()),
        )
        .await
        .expect(400);
    assert!(r.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Malformed request body"));

    // Microversions out of range and malformed.
    let r = env
        .get(Service::Compute, "/v2.1/servers", Some("2.200"))
        .await
        .expect(406);
    assert_eq!(
        r.json()["computeFault"]["message"],
        "Version 2.200 is not supported by the API. Minimum is 2.1 and maximum is 2.104."
    );
    env.get(Service::Compute, "/v2.1/servers", Some("two"))
        .await
        .expect(400);
}

/// A volume of another zone is attached, as Nova does by default; under
/// `cross_az_attach = False` Nova's 400 refuses it, in Nova's words.
#[tokio::test]
async fn a_cross_zone_attach_is_refused_only_under_cross_az_attach_false() {
    for cross_az_attach in [true, false] {
        let env = start_with(
            SimConfig {
                cross_az_attach,
                ..config()
            },
            HttpSettings::default(),
        )
        .await;
        let a = env.active_server("a").await;
        let r = env
            .post(
                Service::Volume,
                "/v3/volumes",
                None,
                json!({"volume": {"size": 1, "name": "v", "availability_zone": "az2"}}),
            )
            .await
            .expect(202)
            .json();
        let vol = r["volume"]["id"].as_str().unwrap().to_string();
        env.wait_volume(&vol, "available").await;
        let r = env
            .post(
                Service::Compute,
                &format!("/v2.1/servers/{a}/os-volume_attachments"),
                Some("2.79"),
                json!({"volumeAttachment": {"volumeId": vol}}),
            )
            .await;
        if cross_az_attach {
            r.expect(200);
            env.wait_volume(&vol, "in-use").await;
        } else {
            assert_eq!(
                r.expect(400).json(),
                json!({"badRequest": {"code": 400, "message": format!(
                    "Invalid volume: Instance {a} and volume {vol} are not in the same availability_zone. Instance is in az1. Volume is in az2"
                )}})
            );
        }
    }
}

/// Neutron refuses a subnet's network and broadcast addresses as fixed IPs
/// (they are not the subnet's to give: `check_subnet_ip`) as it refuses an
/// address outside the subnet.
#[tokio::test]
async fn a_subnets_network_and_broadcast_addresses_are_refused_as_fixed_ips() {
    let env = start().await;
    let net = env.network_id("tenant-net").await;
    for ip in ["10.0.0.0", "10.0.255.255", "10.1.0.7"] {
        let r = env
            .post(
                Service::Network,
                "/v2.0/ports",
                None,
                json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": ip}]}}),
            )
            .await
            .expect(400);
        assert_eq!(
            r.json(),
            json!({"NeutronError": {"type": "InvalidIpForSubnet", "message": format!("IP address {ip} is not a valid IP for the specified subnet."), "detail": ""}}),
            "{ip}"
        );
    }
    env.post(
        Service::Network,
        "/v2.0/ports",
        None,
        json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.2"}]}}),
    )
    .await
    .expect(201);
}

/// Neutron's default policy as a project member meets it, measured on
/// the testbed (a member of `service`, on the `tenant` project's tenant-net
/// shared with it), with `member_port_policy`: a port create setting an
/// address (`fixed_ips` `ip_address`) on another project's network is
/// refused whatever the address (one of the subnet, one outside it), the
/// rule naming each key of each `fixed_ips` entry; a subnet alone is
/// taken, and so is an address on the project's own network. A port a
/// server is bound to may not be deleted. Both 403 PolicyNotAuthorized in
/// Neutron's words, and nothing is made or deleted. Without the setting
/// (an admin), both are taken.
#[tokio::test]
async fn a_member_may_set_no_address_on_another_projects_network_nor_delete_a_bound_port() {
    let theirs = NetworkSpec::new("their-net", "10.61.0.0/16", "10.61.0.1", false)
        .of_project("tenant")
        .shared_with_project("service");
    let mut settings = HttpSettings::default();
    settings.networks.push(theirs.clone());
    let env = start_with(
        SimConfig {
            member_port_policy: true,
            ..config()
        },
        settings.clone(),
    )
    .await;
    let refused = |rules: &str| json!({"NeutronError": {"type": "PolicyNotAuthorized", "message": format!("(rule:create_port and (rule:create_port:fixed_ips and ({rules}))) is disallowed by policy"), "detail": ""}});
    let ip = "rule:create_port:fixed_ips:ip_address";
    let subnet = "rule:create_port:fixed_ips:subnet_id";
    let sub = theirs.subnet_id.as_str();
    for (fixed_ips, rules) in [
        (json!([{"ip_address": "10.61.0.7"}]), ip.to_owned()),
        (json!([{"ip_address": "192.168.99.9"}]), ip.to_owned()),
        (
            json!([{"subnet_id": sub, "ip_address": "10.61.0.7"}]),
            format!("{ip} and {subnet}"),
        ),
        (
            json!([{"subnet_id": sub}, {"ip_address": "10.61.0.8"}]),
            format!("{subnet} and {ip}"),
        ),
        (
            json!([{"ip_address": "10.61.0.7"}, {"ip_address": "10.61.0.8"}]),
            format!("{ip} and {ip}"),
        ),
    ] {
        let r = env
            .post(
                Service::Network,
                "/v2.0/ports",
                None,
                json!({"port": {"network_id": theirs.id, "fixed_ips": fixed_ips}}),
            )
            .await
            .expect(403);
        assert_eq!(r.json(), refused(&rules), "{fixed_ips}");
    }
    // An address that is none is refused first, as Neutron validates the
    // body before its policy.
    env.post(
        Service::Network,
        "/v2.0/ports",
        None,
        json!({"port": {"network_id": theirs.id, "fixed_ips": [{"ip_address": "not-an-ip"}]}}),
    )
    .await
    .expect(400);
    assert!(env.sim.ports().is_empty(), "{:?}", env.sim.ports());
    env.post(
        Service::Network,
        "/v2.0/ports",
        None,
        json!({"port": {"network_id": theirs.id, "fixed_ips": [{"subnet_id": sub}]}}),
    )
    .await
    .expect(201);
    let own = env.network_id("tenant-net").await;
    env.post(
        Service::Network,
        "/v2.0/ports",
        None,
        json!({"port": {"network_id": own, "fixed_ips": [{"ip_address": "10.0.0.7"}]}}),
    )
    .await
    .expect(201);

    let sid = env.active_server("a").await;
    let port = env.port("bound").await;
    env.post(
        Service::Compute,
        &format!("/v2.1/servers/{sid}/os-interface"),
        Some("2.79"),
        json!({"interfaceAttachment": {"port_id": port}}),
    )
    .await
    .expect(200);
    wait_until(|| async {
        let p = env
            .get(Service::Network, &format!("/v2.0/ports/{port}"), None)
            .await
            .expect(200)
            .json();
        (p["port"]["device_id"] == sid.as_str()).then_some(())
    })
    .await;
    let r = env
        .delete(Service::Network, &format!("/v2.0/ports/{port}"), None)
        .await
        .expect(403);
    assert_eq!(
        r.json(),
        json!({"NeutronError": {"type": "PolicyNotAuthorized", "message": "rule:delete_port is disallowed by policy", "detail": ""}})
    );
    env.get(Service::Network, &format!("/v2.0/ports/{port}"), None)
        .await
        .expect(200);

    let admin = start_with(config(), settings).await;
    admin
        .post(
            Service::Network,
            "/v2.0/ports",
            None,
            json!({"port": {"network_id": theirs.id, "fixed_ips": [{"ip_address": "10.61.0.7"}]}}),
        )
        .await
        .expect(201);
}

/// Cinder refuses a delete of a volume already `deleting` (400
/// InvalidVolume), and answers 404 once it is gone.
#[tokio::test]
async fn a_second_delete_of_a_deleting_volume_is_refused() {
    let mut cfg = config();
    cfg.latencies.delete = Duration::from_secs(3600);
    let env = start_with(cfg, HttpSettings::default()).await;
    let vol = env.available_volume("v").await;
    let path = format!("/v3/volumes/{vol}");
    env.delete(Service::Volume, &path, None).await.expect(202);
    let r = env.delete(Service::Volume, &path, None).await.expect(400);
    assert_eq!(
        r.json(),
        json!({"badRequest": {"code": 400, "message": "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer."}})
    );
}

#[tokio::test]
async fn attach_conflicts_have_real_bodies() {
    let env = start().await;
    let a = env.active_server("a").await;
    let b = env.active_server("b").await;
    let vol = env.available_volume("v").await;
    env.post(
        Service::Compute,
        &format!("/v2.1/servers/{a}/os-volume_attachments"),
        Some("2.79"),
        json!({"volumeAttachment": {"volumeId": vol}}),
    )
    .await
    .expect(200);
    env.wait_volume(&vol, "in-use").await;
    let r = env
        .post(
            Service::Compute,
            &format!("/v2.1/servers/{b}/os-volume_attachments"),
            Some("2.79"),
            json!({"volumeAttachment": {"volumeId": vol}}),
        )
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"badRequest": {"code": 400, "message": format!("Invalid volume: volume {vol} is already attached to instances: {a}")}})
    );
    // Detach from the wrong server.
    let r = env
        .delete(
            Service::Compute,
            &format!("/v2.1/servers/{b}/os-volume_attachments/{vol}"),
            None,
        )
        .await
        .expect(404);
    assert_eq!(
        r.json()["itemNotFound"]["message"],
        format!("Instance {b} is not attached to volume {vol}")
    );
    // Delete an in-use volume.
    let r = env
        .delete(Service::Volume, &format!("/v3/volumes/{vol}"), None)
        .await
        .expect(400);
    assert!(r.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid volume: Volume status must be available or error"));
    // Attach a missing volume.
    let missing = "00000000-0000-0000-0000-000000000000";
    let r = env
        .post(
            Service::Compute,
            &format!("/v2.1/servers/{a}/os-volume_attachments"),
            Some("2.79"),
            json!({"volumeAttachment": {"volumeId": missing}}),
        )
        .await
        .expect(404);
    assert_eq!(
        r.json(),
        json!({"itemNotFound": {"code": 404, "message": format!("Volume {missing} could not be found.")}})
    );
    let r = env.volume(missing).await.expect(404);
    assert_eq!(
        r.json(),
        json!({"itemNotFound": {"code": 404, "message": format!("Volume {missing} could not be found.")}})
    );

    // A port in use.
    let port = env.port("p").await;
    let attach = |server: String| {
        let env = &env;
        let port = port.clone();
        async move {
            env.post(
                Service::Compute,
                &format!("/v2.1/servers/{server}/os-interface"),
                Some("2.79"),
                json!({"interfaceAttachment": {"port_id": port}}),
            )
            .await
        }
    };
    attach(a.clone()).await.expect(200);
    let r = attach(b.clone()).await.expect(409);
    assert_eq!(
        r.json(),
        json!({"conflictingRequest": {"code": 409, "message": format!("Port {port} is still in use.")}})
    );
    // Neutron: renaming a port is fine; rebinding it there is not simulated.
    env.call(
        Method::PUT,
        Service::Network,
        &format!("/v2.0/ports/{port}"),
        None,
        Some(json!({"port": {"device_id": b}})),
    )
    .await
    .expect(400);
    let r = env
        .call(
            Method::PUT,
            Service::Network,
            &format!("/v2.0/ports/{port}"),
            None,
            Some(json!({"port": {"name": "renamed"}})),
        )
        .await
        .expect(200);
    assert_eq!(r.json()["port"]["name"], "renamed");
    assert_eq!(r.json()["port"]["device_id"], a.as_str());
    // Neutron's 404.
    let r = env
        .delete(Service::Network, &format!("/v2.0/ports/{missing}"), None)
        .await
        .expect(404);
    assert_eq!(
        r.json(),
        json!({"NeutronError": {"type": "PortNotFound", "message": format!("Port {missing} could not be found."), "detail": ""}})
    );
    let r = env
        .post(
            Service::Network,
            "/v2.0/ports",
            None,
            json!({"port": {"network_id": missing}}),
        )
        .await
        .expect(404);
    assert_eq!(r.json()["NeutronError"]["type"], "NetworkNotFound");
    let r = env
        .raw(
            Method::POST,
            &env.url(Service::Network, "/v2.0/ports"),
            &[("x-auth-token", &env.token)],
            Some("not json".into()),
        )
        .await
        .expect(400);
    assert_eq!(r.json()["NeutronError"]["type"], "HTTPBadRequest");
    let r = env
        .raw(
            Method::POST,
            &env.url(Service::Volume, "/v3/volumes"),
            &[("x-auth-token", &env.token)],
            Some("{".into()),
        )
        .await
        .expect(400);
    assert!(r.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Malformed request body"));
}

#[tokio::test]
async fn quota_errors_per_service() {
    let mut cfg = config();
    cfg.quotas.max_instances = 2;
    cfg.quotas.max_volumes = 1;
    // The two servers' own ports and one more.
    cfg.quotas.max_ports = 3;
    cfg.max_cores = Some(5);
    let env = start_with(cfg, HttpSettings::default()).await;
    // Cores: db.large is 4 vCPUs.
    let large = env.flavor_id("db.large").await;
    let mut body = env.server_body("big", "az1").await;
    body["server"]["flavorRef"] = json!(large);
    env.post(
        Service::Compute,
        "/v2.1/servers",
        Some("2.52"),
        body.clone(),
    )
    .await
    .expect(202);
    let r = env
        .post(Service::Compute, "/v2.1/servers", Some("2.52"), body)
        .await
        .expect(403);
    assert_eq!(
        r.json(),
        json!({"forbidden": {"code": 403, "message": "Quota exceeded for cores: Requested 4, but already used 4 of 5 cores"}})
    );
    env.boot("s2", "2.52", &[]).await;
    let body = env.server_body("s3", "az1").await;
    let r = env
        .post(Service::Compute, "/v2.1/servers", Some("2.52"), body)
        .await
        .expect(403);
    assert_eq!(
        r.json(),
        json!({"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances"}})
    );

    env.available_volume("v1").await;
    let r = env
        .post(
            Service::Volume,
            "/v3/volumes",
            None,
            json!({"volume": {"size": 1}}),
        )
        .await
        .expect(413);
    assert_eq!(r.header("retry-after"), Some("0"));
    assert_eq!(
        r.json(),
        json!({"overLimit": {"code": 413, "message": "VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota 'volumes'.", "retryAfter": "0"}})
    );

    env.port("p1").await;
    let net = env.network_id("tenant-net").await;
    let r = env
        .post(
            Service::Network,
            "/v2.0/ports",
            None,
            json!({"port": {"network_id": net}}),
        )
        .await
        .expect(409);
    assert_eq!(
        r.json(),
        json!({"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['port'].", "detail": ""}})
    );
    let pid = env.face.project_id().to_string();
    let q = env
        .get(
            Service::Network,
            &format!("/v2.0/quotas/{pid}/details"),
            None,
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        q["quota"]["port"],
        json!({"used": 3, "limit": 3, "reserved": 0})
    );
    // Nova checks the port quota before the compute ones, in its own words.
    let body = env.server_body("s3", "az1").await;
    let r = env
        .post(Service::Compute, "/v2.1/servers", Some("2.52"), body)
        .await
        .expect(403);
    assert_eq!(
        r.json(),
        json!({"forbidden": {"code": 403, "message": "Maximum number of ports exceeded"}})
    );

    // A policy that keeps quotas from members: Neutron's 403.
    env.face.faults().refuse_quota_details(true);
    let r = env
        .get(
            Service::Network,
            &format!("/v2.0/quotas/{pid}/details"),
            None,
        )
        .await
        .expect(403);
    assert_eq!(
        r.json(),
        json!({"NeutronError": {"type": "PolicyNotAuthorized", "message": "rule:get_quota is disallowed by policy", "detail": ""}})
    );
}

#[tokio::test]
async fn model_errors_map_to_each_services_shape() {
    let env = start().await;
    let faults = env.sim.faults();
    // Throttled: 429, Retry-After in whole seconds rounded up, service body.
    faults.api_errors_next(
        3,
        CloudError::Throttled {
            retry_after: Some(Duration::from_millis(1200)),
            message: "Rate limit exceeded".into(),
            unavailable: false,
        },
    );
    let r = env
        .get(Service::Compute, "/v2.1/servers/detail", Some("2.79"))
        .await
        .expect(429);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(
        r.json(),
        json!({"overLimit": {"code": 429, "message": "Rate limit exceeded", "retryAfter": "2"}})
    );
    let r = env
        .get(Service::Volume, "/v3/volumes/detail", None)
        .await
        .expect(429);
    assert_eq!(r.json()["overLimit"]["retryAfter"], "2");
    let r = env
        .get(Service::Network, "/v2.0/ports", None)
        .await
        .expect(429);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.json()["NeutronError"]["type"], "TooManyRequests");
    env.get(Service::Network, "/v2.0/ports", None)
        .await
        .expect(200);
    // A 503 naming when to come back (maintenance), never "0": that
    // would name no wait.
    faults.api_errors_next(
        1,
        CloudError::Throttled {
            retry_after: None,
            message: "down for maintenance".into(),
            unavailable: true,
        },
    );
    let r = env
        .get(Service::Compute, "/v2.1/servers/detail", Some("2.79"))
        .await
        .expect(503);
    assert_eq!(r.header("retry-after"), Some("1"));

    faults.api_errors_next(1, CloudError::Transient("database unavailable".into()));
    let r = env
        .get(Service::Compute, "/v2.1/servers", None)
        .await
        .expect(500);
    assert_eq!(
        r.json(),
        json!({"computeFault": {"code": 500, "message": "database unavailable"}})
    );
    faults.api_errors_next(1, CloudError::Conflict("busy".into()));
    let r = env
        .get(Service::Compute, "/v2.1/servers", None)
        .await
        .expect(409);
    assert_eq!(
        r.json(),
        json!({"conflictingRequest": {"code": 409, "message": "busy"}})
    );
    faults.api_errors_next(1, CloudError::Fatal("bad".into()));
    let r = env
        .get(Service::Volume, "/v3/volumes", None)
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"badRequest": {"code": 400, "message": "bad"}})
    );
    faults.api_errors_next(1, CloudError::NotFound("gone".into()));
    let r = env
        .get(Service::Compute, "/v2.1/servers", None)
        .await
        .expect(404);
    assert_eq!(
        r.json(),
        json!({"itemNotFound": {"code": 404, "message": "gone"}})
    );
    faults.api_errors_next(1, CloudError::QuotaExceeded("quota".into()));
    let r = env
        .get(Service::Volume, "/v3/volumes", None)
        .await
        .expect(413);
    assert_eq!(r.header("retry-after"), Some("0"));
}

#[tokio::test]
async fn in_process_faults_show_through_http() {
    let env = start().await;
    let faults = env.sim.faults();
    faults.error_next_boots(1, "NoValidHost");
    let sid = env.boot("doomed", "2.52", &[]).await;
    let s = env.wait_server(&sid, "ERROR").await;
    assert_eq!(s["fault"]["code"], 500);
    assert_eq!(
        s["fault"]["message"],
        "No valid host was found. There are not enough hosts available."
    );
    assert_eq!(s["addresses"], json!({}));
    assert_eq!(s["OS-EXT-AZ:availability_zone"], "");

    let sid = env.active_server("ok").await;
    let vol = env.available_volume("v").await;
    faults.fail_next_volume_attach(1);
    let path = format!("/v2.1/servers/{sid}/os-volume_attachments");
    let attach = || {
        env.post(
            Service::Compute,
            &path,
            Some("2.79"),
            json!({"volumeAttachment": {"volumeId": vol}}),
        )
    };
    let r = attach().await.expect(500);
    assert_eq!(r.json()["computeFault"]["code"], 500);
    attach().await.expect(200);

    // A volume the backend fails to create ends in `error` (and can be deleted).
    faults.error_next_volumes(1);
    let r = env
        .post(
            Service::Volume,
            "/v3/volumes",
            None,
            json!({"volume": {"size": 1}}),
        )
        .await
        .expect(202);
    let bad = r.json()["volume"]["id"].as_str().unwrap().to_string();
    env.wait_volume(&bad, "error").await;
    env.delete(Service::Volume, &format!("/v3/volumes/{bad}"), None)
        .await
        .expect(202);

    // A server created over HTTP is visible in-process.
    use pool_manager::cloud::Cloud;
    let via_trait = env.sim.get_server(&sid).await.unwrap();
    assert_eq!(via_trait.name, "ok");
    assert!(
        env.sim
            .call_counts()
            .get("attach_volume")
            .copied()
            .unwrap_or(0)
            >= 2
    );

    // Slow calls: the in-process knob delays HTTP answers too.
    faults.slow_calls(Duration::from_millis(200));
    let t0 = tokio::time::Instant::now();
    env.get(Service::Compute, "/v2.1/servers", None)
        .await
        .expect(200);
    assert!(t0.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn http_fault_knobs() {
    let env = start().await;
    let f = env.face.faults();
    f.throttle_next(Service::Compute, 2, Duration::from_millis(2500));
    for _ in 0..2 {
        let r = env
            .get(Service::Compute, "/v2.1/servers", None)
            .await
            .expect(429);
        assert_eq!(r.header("retry-after"), Some("3"));
        assert_eq!(r.json()["overLimit"]["retryAfter"], "3");
    }
    env.get(Service::Compute, "/v2.1/servers", None)
        .await
        .expect(200);
    // Throttling one service leaves the others alone; Keystone too can be throttled.
    f.throttle_next(Service::Identity, 1, Duration::from_secs(1));
    env.get(Service::Volume, "/v3/volumes", None)
        .await
        .expect(200);
    let r = env
        .issue_token("pool", "poolpass")
        .await
        .unwrap_err()
        .expect(429);
    assert_eq!(r.json()["error"]["code"], 429);

    f.server_error_next(Service::Volume, 1);
    let r = env
        .get(Service::Volume, "/v3/volumes", None)
        .await
        .expect(500);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text.contains("<h1>Internal Server Error</h1>"));
    env.get(Service::Volume, "/v3/volumes", None)
        .await
        .expect(200);

    // An API gateway's own 404: JSON, but no OpenStack fault.
    f.gateway_not_found_next(Service::Network, 1);
    let r = env
        .get(Service::Network, "/v2.0/ports", None)
        .await
        .expect(404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"message": "no Route matched with those values"})
    );
    env.get(Service::Network, "/v2.0/ports", None)
        .await
        .expect(200);

    // A canned answer to one method and path: other calls pass and keep
    // it; the call it answers does nothing.
    let locked = json!({"error": {"code": 401, "title": "Unauthorized",
        "message": "The account is locked for user: 9a8b."}});
    f.answer_next(
        Service::Identity,
        "POST",
        "/v3/auth/tokens",
        1,
        401,
        &locked.to_string(),
    );
    env.get(Service::Identity, "/v3", None).await.expect(200);
    let before = f.password_logins();
    let r = env
        .issue_token("pool", "poolpass")
        .await
        .unwrap_err()
        .expect(401);
    assert_eq!(r.json(), locked);
    assert_eq!(f.password_logins(), before, "the canned answer did nothing");
    env.issue_token("pool", "poolpass").await.unwrap();

    // Garbage: the call takes effect, the answer is cut.
    f.garbage_next(Service::Volume, 1);
    let r = env
        .post(
            Service::Volume,
            "/v3/volumes",
            None,
            json!({"volume": {"size": 1, "name": "cut"}}),
        )
        .await
        .expect(200);
    assert!(
        serde_json::from_str::<Value>(&r.text).is_err(),
        "{}",
        r.text
    );
    let list = env
        .get(Service::Volume, "/v3/volumes?name=cut", None)
        .await
        .expect(200)
        .json();
    assert_eq!(list["volumes"].as_array().unwrap().len(), 1);

    f.slow(Service::Network, Duration::from_millis(500));
    let t0 = tokio::time::Instant::now();
    env.get(Service::Network, "/v2.0/networks", None)
        .await
        .expect(200);
    assert!(t0.elapsed() >= Duration::from_millis(500));
    // Cleared, an hour's delay is gone: the call answers well within the
    // bound (an upper bound on wall time would be a race on a busy machine).
    f.slow(Service::Network, Duration::from_secs(3600));
    f.clear();
    tokio::time::timeout(
        Duration::from_secs(60),
        env.get(Service::Network, "/v2.0/networks", None),
    )
    .await
    .expect("clear() removed the delay")
    .expect(200);
}

// ---- osauth ---------------------------------------------------------------

#[tokio::test]
async fn osauth_authenticates_and_discovers_versions() {
    use osauth::services::{BLOCK_STORAGE, COMPUTE, IMAGE, NETWORK};
    use osauth::ApiVersion;
    let env = start().await;
    let yaml: serde_yaml::Value = serde_yaml::from_str(&env.face.clouds_yaml("sim")).unwrap();
    let cfg: osauth::CloudConfig = serde_yaml::from_value(yaml["clouds"]["sim"].clone()).unwrap();
    let session = cfg.create_session().await.unwrap();

    let versions = session.get_api_versions(COMPUTE).await.unwrap();
    assert_eq!(versions, Some((ApiVersion(2, 1), ApiVersion(2, 104))));
    let picked = session
        .pick_api_version(
            COMPUTE,
            [ApiVersion(2, 26), ApiVersion(2, 101), ApiVersion(2, 200)],
        )
        .await
        .unwrap();
    assert_eq!(picked, Some(ApiVersion(2, 101)));
    assert_eq!(
        session.get_api_versions(BLOCK_STORAGE).await.unwrap(),
        Some((ApiVersion(3, 0), ApiVersion(3, 71)))
    );

    // A boot with tags through the session, then lists through every service.
    let image = env.image_id().await;
    let net = env.network_id("mgmt-net").await;
    let flavor = env.flavor_id("db.small").await;
    let created: Value = session
        .post(COMPUTE, &["servers"])
        .api_version(ApiVersion(2, 52))
        .json(
            &json!({"server": {"name": "osauth", "flavorRef": flavor, "imageRef": image,
                                 "networks": [{"uuid": net}], "tags": ["via-osauth"]}}),
        )
        .fetch()
        .await
        .unwrap();
    let sid = created["server"]["id"].as_str().unwrap().to_string();
    let listed: Value = session
        .get(COMPUTE, &["servers", "detail"])
        .api_version(ApiVersion(2, 26))
        .query(&[("tags", "via-osauth")])
        .fetch()
        .await
        .unwrap();
    assert_eq!(listed["servers"][0]["id"], sid.as_str());
    // Cinder through the version document's self link (no project id).
    let volumes: Value = session
        .get(BLOCK_STORAGE, &["volumes", "detail"])
        .header("OpenStack-API-Version", "volume 3.60")
        .fetch()
        .await
        .unwrap();
    assert_eq!(volumes["volumes"], json!([]));
    let nets: Value = session
        .get(NETWORK, &["networks"])
        .query(&[("name", "tenant-net")])
        .fetch()
        .await
        .unwrap();
    assert_eq!(nets["networks"][0]["name"], "tenant-net");
    let images: Value = session
        .get(IMAGE, &["images"])
        .query(&[("name", "mysql-8.0")])
        .fetch()
        .await
        .unwrap();
    assert_eq!(images["images"][0]["id"], image.as_str());

    // osauth's error kinds from the face's statuses.
    let err = session
        .get(
            COMPUTE,
            &["servers", "00000000-0000-0000-0000-000000000000"],
        )
        .fetch::<Value>()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), osauth::ErrorKind::ResourceNotFound);
    env.face.faults().revoke_all_tokens();
    let err = session
        .get(COMPUTE, &["servers"])
        .fetch::<Value>()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), osauth::ErrorKind::AuthenticationFailed);
}

#[tokio::test]
async fn malformed_bodies_are_400_with_a_body_everywhere() {
    let env = start().await;
    let sid = env.active_server("target").await;
    let port = env.port("p").await;
    let endpoints = [
        (
            Method::POST,
            Service::Identity,
            "/v3/auth/tokens".to_string(),
        ),
        (Method::POST, Service::Compute, "/v2.1/servers".to_string()),
        (
            Method::POST,
            Service::Compute,
            format!("/v2.1/servers/{sid}/os-volume_attachments"),
        ),
        (
            Method::POST,
            Service::Compute,
            format!("/v2.1/servers/{sid}/os-interface"),
        ),
        (Method::POST, Service::Volume, "/v3/volumes".to_string()),
        (Method::POST, Service::Network, "/v2.0/ports".to_string()),
        (Method::PUT, Service::Network, format!("/v2.0/ports/{port}")),
    ];
    let bodies = [
        "",
        "not json",
        "{\"truncated\": ",
        "null",
        "[]",
        "{}",
        "{\"server\": 5, \"volume\": [], \"port\": \"x\", \"auth\": 1}",
        "{\"server\": {\"name\": 5}, \"volume\": {\"size\": -1}, \"port\": {\"network_id\": 7}}",
        "{\"server\": {\"name\": \"x\", \"flavorRef\": {}}, \"volume\": {\"size\": 1e30}, \"port\": {\"name\": []}}",
        "{\"volumeAttachment\": {\"volumeId\": 5}, \"interfaceAttachment\": {}}",
        "{\"auth\": {\"identity\": {\"methods\": \"password\"}}}",
    ];
    for (method, service, path) in &endpoints {
        for body in bodies {
            let r = env
                .raw(
                    method.clone(),
                    &env.url(*service, path),
                    &[("x-auth-token", &env.token)],
                    Some(body.to_string()),
                )
                .await;
            // Keystone answers credentials it cannot use with 401.
            let expected: &[u16] = if *service == Service::Identity {
                &[400, 401]
            } else {
                &[400]
            };
            assert!(
                expected.contains(&r.status.as_u16()),
                "{method} {path} with {body:?}: {} {}",
                r.status,
                r.text
            );
            let j = r.json();
            let message = j
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|inner| inner.get("message"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            assert!(!message.is_empty(), "{method} {path} with {body:?}: {j}");
        }
    }
    // Still serving.
    env.get(Service::Compute, &format!("/v2.1/servers/{sid}"), None)
        .await
        .expect(200);
}

#[tokio::test]
async fn shutdown_ends_requests_hung_by_the_model() {
    let env = start().await;
    env.sim.faults().hang_after_calls(0);
    let url = env.url(Service::Compute, "/v2.1/servers");
    let http = env.http.clone();
    let token = env.token.clone();
    let hung = tokio::spawn(async move {
        http.get(url)
            .header("x-auth-token", token)
            .send()
            .await
            .map(|r| r.status())
    });
    // Shut down only once the request is in the model, hung there.
    let mut hung_calls = env.sim.hung_calls();
    tokio::time::timeout(Duration::from_secs(60), hung_calls.wait_for(|n| *n == 1))
        .await
        .expect("the request reaches the model")
        .unwrap();
    assert!(!hung.is_finished(), "the request should hang");
    // The hung request would otherwise hold the shutdown forever.
    tokio::time::timeout(Duration::from_secs(60), env.face.shutdown())
        .await
        .expect("shutdown does not wait for the hung request")
        .unwrap();
    let status = hung.await.unwrap().unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_call_hung_after_taking_effect_is_carried_out_and_never_answered() {
    let env = start().await;
    let body = env.server_body("lost", "az1").await;
    let mut hung = env.sim.hung_calls();
    env.sim.faults().hang_after_calls_take_effect(0);
    tokio::select! {
        answered = env.post(Service::Compute, "/v2.1/servers", Some("2.52"), body) => {
            panic!("the create was answered: {}", answered.status)
        }
        _ = hung.wait_for(|n| *n == 1) => {}
    }
    let servers = env.sim.servers();
    assert_eq!(servers.len(), 1, "the create took effect: {servers:?}");
    assert_eq!(servers[0].server.name, "lost");
    env.sim.faults().clear_hang();
    let listed = env
        .get(Service::Compute, "/v2.1/servers", None)
        .await
        .expect(200);
    assert_eq!(listed.json()["servers"][0]["name"], "lost");
}

#[tokio::test]
async fn attaching_to_a_building_server_is_409() {
    let mut cfg = config();
    // 20 s in BUILD: long past the end of this test.
    cfg.boot.t_alone = Duration::from_secs(10_000);
    let env = start_with(cfg, HttpSettings::default()).await;
    let sid = env.boot("slow", "2.52", &[]).await;
    let vol = env.available_volume("v").await;
    // From 2.101 too: the server is checked before the 202.
    for mv in ["2.79", "2.101"] {
        let r = env
            .post(
                Service::Compute,
                &format!("/v2.1/servers/{sid}/os-volume_attachments"),
                Some(mv),
                json!({"volumeAttachment": {"volumeId": vol}}),
            )
            .await
            .expect(409);
        assert_eq!(
            r.json(),
            json!({"conflictingRequest": {"code": 409, "message": format!("Cannot 'attach_volume' instance {sid} while it is in vm_state building")}})
        );
    }
    let port = env.port("p").await;
    let r = env
        .post(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-interface"),
            Some("2.79"),
            json!({"interfaceAttachment": {"port_id": port}}),
        )
        .await
        .expect(409);
    assert!(r.json()["conflictingRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("vm_state building"));
    assert_eq!(env.server(&sid, "2.79").await["status"], "BUILD");
}

/// From 2.101 a volume attach is asynchronous, as in real Nova: 202 once
/// the server may take one, the volume reserved only `attach_reserve_delay`
/// later (Cinder shows it `available` and the server lists no attachment
/// until then), and a refusal met at the reserve (the volume taken by an
/// attach accepted just before, whose reserve was not done yet at the
/// second's answer) answered to no one.
#[tokio::test]
async fn from_2_101_an_attach_is_answered_before_the_volume_is_reserved() {
    let settings = HttpSettings {
        // Long enough to look at the volume before it, on a loaded machine.
        attach_reserve_delay: Duration::from_secs(2),
        ..HttpSettings::default()
    };
    let env = start_with(config(), settings).await;
    let a = env.active_server("a").await;
    let b = env.active_server("b").await;
    let v1 = env.available_volume("v1").await;
    let attach = |sid: &str, vol: &str, mv: &'static str| {
        let path = format!("/v2.1/servers/{sid}/os-volume_attachments");
        let body = json!({"volumeAttachment": {"volumeId": vol}});
        let env = &env;
        async move { env.post(Service::Compute, &path, Some(mv), body).await }
    };
    let r = attach(&a, &v1, "2.101").await.expect(202);
    assert_eq!(r.text, "");
    assert_eq!(
        env.volume(&v1).await.json()["volume"]["status"],
        "available"
    );
    let s = env.server(&a, "2.79").await;
    assert_eq!(s["os-extended-volumes:volumes_attached"], json!([]));
    let v = env.wait_volume(&v1, "in-use").await;
    assert_eq!(v["attachments"][0]["server_id"], a.as_str());

    // Two attaches of one volume before either is reserved: both are
    // accepted, the first reserve takes it, the second is refused silently.
    let v2 = env.available_volume("v2").await;
    attach(&a, &v2, "2.101").await.expect(202);
    attach(&b, &v2, "2.101").await.expect(202);
    // A reserve accepted after those is done after them.
    let v3 = env.available_volume("v3").await;
    attach(&b, &v3, "2.101").await.expect(202);
    env.wait_volume(&v3, "in-use").await;
    let v = env.volume(&v2).await.json();
    assert_eq!(v["volume"]["status"], "in-use");
    assert_eq!(
        v["volume"]["attachments"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    assert_eq!(v["volume"]["attachments"][0]["server_id"], a.as_str());
    let s = env.server(&b, "2.79").await;
    assert_eq!(
        s["os-extended-volumes:volumes_attached"],
        json!([{"id": v3, "delete_on_termination": false}])
    );
}

/// From 2.101 Nova still checks the volume before its 202, as the testbed
/// measured at 2.104 (deploy/testbed/smoke-output-example.txt): a volume
/// attached to another server is a synchronous 400 "already attached to
/// instances", a missing volume a 404, as below 2.101. cloudsim answered
/// both 202, refusing them silently later.
#[tokio::test]
async fn from_2_101_an_attach_of_a_volume_in_use_or_missing_is_refused_at_once() {
    let env = start_with(config(), HttpSettings::default()).await;
    let a = env.active_server("a").await;
    let b = env.active_server("b").await;
    let vol = env.available_volume("v").await;
    let attach = |sid: &str, vol: &str, mv: &'static str| {
        let path = format!("/v2.1/servers/{sid}/os-volume_attachments");
        let body = json!({"volumeAttachment": {"volumeId": vol}});
        let env = &env;
        async move { env.post(Service::Compute, &path, Some(mv), body).await }
    };
    attach(&a, &vol, "2.104").await.expect(202);
    env.wait_volume(&vol, "in-use").await;
    for mv in ["2.79", "2.101", "2.104"] {
        let r = attach(&b, &vol, mv).await.expect(400);
        assert_eq!(
            r.json(),
            json!({"badRequest": {"code": 400, "message": format!("Invalid volume: volume {vol} is already attached to instances: {a}")}}),
            "{mv}"
        );
        let missing = "00000000-0000-0000-0000-000000000000";
        let r = attach(&b, missing, mv).await.expect(404);
        assert_eq!(
            r.json(),
            json!({"itemNotFound": {"code": 404, "message": format!("Volume {missing} could not be found.")}}),
            "{mv}"
        );
    }
    let s = env.server(&b, "2.79").await;
    assert_eq!(s["os-extended-volumes:volumes_attached"], json!([]));
}

/// Nova's answer to a detach while the volume is still attaching: Cinder's
/// begin_detaching wants it `in-use`, and Nova passes its 400 on.
#[tokio::test]
async fn detaching_a_volume_still_attaching_is_400() {
    let mut cfg = config();
    // 20 s attaching: long past the end of this test.
    cfg.latencies.volume_attach = Duration::from_secs(10_000);
    let env = start_with(cfg, HttpSettings::default()).await;
    let sid = env.active_server("a").await;
    let vol = env.available_volume("v").await;
    env.post(
        Service::Compute,
        &format!("/v2.1/servers/{sid}/os-volume_attachments"),
        Some("2.101"),
        json!({"volumeAttachment": {"volumeId": vol}}),
    )
    .await
    .expect(202);
    let r = env
        .delete(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-volume_attachments/{vol}"),
            None,
        )
        .await
        .expect(400);
    assert_eq!(
        r.json(),
        json!({"badRequest": {"code": 400, "message": "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach."}})
    );
    assert_eq!(
        env.volume(&vol).await.json()["volume"]["status"],
        "attaching"
    );
}

/// Nova with `reclaim_instance_interval` set: a delete soft-deletes a
/// server that was ever ACTIVE. It is SOFT_DELETED by id but left out of
/// the (non-admin) listing and of the instances quota's use (it keeps its
/// port, `a_soft_deleted_server_frees_its_instance_cores_and_ram_not_its_port`), deleting it again changes
/// nothing, a restore brings it back, and a forceDelete (only of a
/// SOFT_DELETED server) or the reclaim deletes it for good.
#[tokio::test]
async fn a_soft_delete_cloud_keeps_servers_until_forced_or_reclaimed() {
    // Never reached here: the steps below must see b SOFT_DELETED
    // however loaded the machine (the reclaim has its own test). And a
    // forced delete that takes 2 s, not 4 ms, so that the steps below see
    // a still deleting however loaded the machine.
    let mut slow_delete = config();
    slow_delete.latencies.delete = Duration::from_secs(1000);
    let settings = HttpSettings {
        reclaim_instance_interval: Duration::from_secs(3600),
        ..HttpSettings::default()
    };
    let env = start_with(slow_delete, settings).await;
    let a = env.active_server("a").await;
    let b = env.active_server("b").await;
    let force = |id: String| {
        let env = &env;
        async move {
            env.post(
                Service::Compute,
                &format!("/v2.1/servers/{id}/action"),
                None,
                json!({"forceDelete": null}),
            )
            .await
        }
    };
    let r = force(a.clone()).await.expect(409);
    assert!(r.json()["conflictingRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("vm_state active"));
    for id in [&a, &b] {
        env.delete(Service::Compute, &format!("/v2.1/servers/{id}"), None)
            .await
            .expect(204);
    }
    env.delete(Service::Compute, &format!("/v2.1/servers/{a}"), None)
        .await
        .expect(204);
    let s = env.server(&a, "2.79").await;
    assert_eq!(s["status"], "SOFT_DELETED");
    assert_eq!(s["OS-EXT-STS:vm_state"], "soft-delete");
    let listed = |path: &'static str| {
        let env = &env;
        async move {
            let body = env
                .get(Service::Compute, path, Some("2.79"))
                .await
                .expect(200)
                .json();
            body["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    for path in [
        "/v2.1/servers/detail",
        "/v2.1/servers",
        "/v2.1/servers/detail?status=SOFT_DELETED",
    ] {
        assert_eq!(listed(path).await, Vec::<String>::new(), "{path}");
    }
    let limits = env
        .get(Service::Compute, "/v2.1/limits", Some("2.79"))
        .await
        .expect(200)
        .json();
    assert_eq!(limits["limits"]["absolute"]["totalInstancesUsed"], 0);

    force(a.clone()).await.expect(202);
    // a is being deleted for good now; b waits for its reclaim.
    let s = env.server(&a, "2.79").await;
    assert_eq!(s["OS-EXT-STS:task_state"], "deleting");
    let s = env.server(&b, "2.79").await;
    assert_eq!(s["status"], "SOFT_DELETED");
    assert_eq!(s["OS-EXT-STS:task_state"], Value::Null);
    let r = env
        .post(
            Service::Compute,
            &format!("/v2.1/servers/{a}/action"),
            None,
            json!({"reboot": {"type": "SOFT"}}),
        )
        .await
        .expect(400);
    assert!(r.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("reboot"));
    // A restore brings b back, listed; a forceDelete of it is refused
    // then, and deleting it soft-deletes it again.
    env.post(
        Service::Compute,
        &format!("/v2.1/servers/{b}/action"),
        None,
        json!({"restore": null}),
    )
    .await
    .expect(202);
    let s = env.server(&b, "2.79").await;
    assert_eq!(s["status"], "ACTIVE");
    assert_eq!(listed("/v2.1/servers/detail").await, vec![b.clone()]);
    let r = force(b.clone()).await.expect(409);
    assert!(r.json()["conflictingRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("vm_state active"));
    env.delete(Service::Compute, &format!("/v2.1/servers/{b}"), None)
        .await
        .expect(204);
    assert_eq!(env.server(&b, "2.79").await["status"], "SOFT_DELETED");
    // a goes as a delete does.
    wait_until(|| async {
        let r = env
            .get(Service::Compute, &format!("/v2.1/servers/{a}"), None)
            .await;
        (r.status == 404).then_some(())
    })
    .await;
    assert_eq!(env.server(&b, "2.79").await["status"], "SOFT_DELETED");
}

/// Nova counts a SOFT_DELETED server in none of its instances, cores and
/// RAM quotas (`_get_counts_in_db` counts only instances not in vm_state
/// soft-delete; the testbed showed 3 servers, one SOFT_DELETED, as 2
/// instances used), while Neutron counts its port until the reclaim. A
/// restore takes its place in the quotas again, and Nova refuses one they
/// have no room for (403, the create's words). cloudsim counted it in all.
#[tokio::test]
async fn a_soft_deleted_server_frees_its_instance_cores_and_ram_not_its_port() {
    let mut cfg = config();
    cfg.quotas.max_instances = 2;
    cfg.max_cores = Some(2);
    cfg.max_ram_mb = Some(2048);
    let settings = HttpSettings {
        reclaim_instance_interval: Duration::from_secs(3600),
        ..HttpSettings::default()
    };
    let env = start_with(cfg, settings).await;
    let a = env.active_server("a").await;
    env.active_server("b").await;
    let used = || async {
        let limits = env
            .get(Service::Compute, "/v2.1/limits", Some("2.79"))
            .await
            .expect(200)
            .json();
        let absolute = &limits["limits"]["absolute"];
        let pid = env.face.project_id().to_string();
        let ports = env
            .get(
                Service::Network,
                &format!("/v2.0/quotas/{pid}/details"),
                None,
            )
            .await
            .expect(200)
            .json();
        (
            absolute["totalInstancesUsed"].clone(),
            absolute["totalCoresUsed"].clone(),
            absolute["totalRAMUsed"].clone(),
            ports["quota"]["port"]["used"].clone(),
        )
    };
    // db.small: 1 vCPU, 1024 MiB; each server has its own port.
    assert_eq!(used().await, (json!(2), json!(2), json!(2048), json!(2)));
    env.delete(Service::Compute, &format!("/v2.1/servers/{a}"), None)
        .await
        .expect(204);
    assert_eq!(env.server(&a, "2.79").await["status"], "SOFT_DELETED");
    assert_eq!(used().await, (json!(1), json!(1), json!(1024), json!(2)));
    // Its room is taken by a new server, which the quotas admit.
    env.active_server("c").await;
    assert_eq!(used().await, (json!(2), json!(2), json!(2048), json!(3)));
    let r = env
        .post(
            Service::Compute,
            &format!("/v2.1/servers/{a}/action"),
            None,
            json!({"restore": null}),
        )
        .await
        .expect(403);
    assert_eq!(
        r.json(),
        json!({"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances"}})
    );
    assert_eq!(env.server(&a, "2.79").await["status"], "SOFT_DELETED");
}

/// A server being deleted (task_state `deleting`) is still found, and Nova
/// refuses its attaches and detaches for its task state, 409, as a real
/// Nova answered (measured on the testbed): not 404 as if it were gone,
/// which it is only once the delete is done.
#[tokio::test]
async fn a_server_being_deleted_refuses_attaches_and_detaches_409() {
    let mut slow_delete = config();
    slow_delete.latencies.delete = Duration::from_secs(1000);
    let env = start_with(slow_delete, HttpSettings::default()).await;
    let sid = env.active_server("a").await;
    let vol = env.available_volume("v").await;
    env.post(
        Service::Compute,
        &format!("/v2.1/servers/{sid}/os-volume_attachments"),
        Some("2.79"),
        json!({"volumeAttachment": {"volumeId": vol}}),
    )
    .await
    .expect(200);
    env.wait_volume(&vol, "in-use").await;
    let port = env.port("p").await;
    env.post(
        Service::Compute,
        &format!("/v2.1/servers/{sid}/os-interface"),
        Some("2.79"),
        json!({"interfaceAttachment": {"port_id": port}}),
    )
    .await
    .expect(200);
    let other_vol = env.available_volume("v2").await;
    let other_port = env.port("p2").await;

    env.delete(Service::Compute, &format!("/v2.1/servers/{sid}"), None)
        .await
        .expect(204);
    assert_eq!(
        env.server(&sid, "2.79").await["OS-EXT-STS:task_state"],
        "deleting"
    );
    let refused = |action: &str| {
        json!({"conflictingRequest": {"code": 409, "message": format!(
            "Cannot '{action}' instance {sid} while it is in task_state deleting"
        )}})
    };
    let r = env
        .delete(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-volume_attachments/{vol}"),
            None,
        )
        .await
        .expect(409);
    assert_eq!(r.json(), refused("detach_volume"));
    let r = env
        .delete(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-interface/{port}"),
            None,
        )
        .await
        .expect(409);
    assert_eq!(r.json(), refused("detach_interface"));
    let r = env
        .post(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-volume_attachments"),
            Some("2.79"),
            json!({"volumeAttachment": {"volumeId": other_vol}}),
        )
        .await
        .expect(409);
    assert_eq!(r.json(), refused("attach_volume"));
    let r = env
        .post(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-interface"),
            Some("2.79"),
            json!({"interfaceAttachment": {"port_id": other_port}}),
        )
        .await
        .expect(409);
    assert_eq!(r.json(), refused("attach_interface"));
    // A second delete is taken, as Nova takes it.
    env.delete(Service::Compute, &format!("/v2.1/servers/{sid}"), None)
        .await
        .expect(204);
}

/// Nova's `detach_volume` takes a SOFT_DELETED server (its
/// `check_instance_state` lists SOFT_DELETED), its `detach_interface`
/// does not: the volume a soft-deleted server holds can be let go of
/// before the reclaim, its port cannot.
#[tokio::test]
async fn a_soft_deleted_server_lets_go_of_a_volume_not_of_a_port() {
    let env = soft_deleting_cloud(Duration::from_secs(3600)).await;
    let sid = env.active_server("a").await;
    let vol = env.available_volume("v").await;
    env.post(
        Service::Compute,
        &format!("/v2.1/servers/{sid}/os-volume_attachments"),
        Some("2.79"),
        json!({"volumeAttachment": {"volumeId": vol}}),
    )
    .await
    .expect(200);
    env.wait_volume(&vol, "in-use").await;
    let port = env.port("p").await;
    env.post(
        Service::Compute,
        &format!("/v2.1/servers/{sid}/os-interface"),
        Some("2.79"),
        json!({"interfaceAttachment": {"port_id": port}}),
    )
    .await
    .expect(200);
    env.delete(Service::Compute, &format!("/v2.1/servers/{sid}"), None)
        .await
        .expect(204);
    assert_eq!(env.server(&sid, "2.79").await["status"], "SOFT_DELETED");
    let r = env
        .delete(
            Service::Compute,
            &format!("/v2.1/servers/{sid}/os-interface/{port}"),
            None,
        )
        .await
        .expect(409);
    assert_eq!(
        r.json(),
        json!({"conflictingRequest": {"code": 409, "message": format!("Cannot 'detach_interface' instance {sid} while it is in vm_state soft-delete")}})
    );
    env.delete(
        Service::Compute,
        &format!("/v2.1/servers/{sid}/os-volume_attachments/{vol}"),
        None,
    )
    .await
    .expect(202);
    env.wait_volume(&vol, "available").await;
    let s = env.server(&sid, "2.79").await;
    assert_eq!(s["status"], "SOFT_DELETED");
    assert_eq!(s["os-extended-volumes:volumes_attached"], json!([]));
}

/// Nova lists a volume whose detach it accepted until the compute host has
/// detached it (the API only begins Cinder's detach and casts to the
/// host): the server shows it, and a second detach meets Cinder's
/// `detaching` (400), until the volume is `available`.
#[tokio::test]
async fn a_volume_detaching_is_still_listed_on_its_server() {
    let mut cfg = config();
    // 20 s detaching: long past the end of this test.
    cfg.latencies.volume_detach = Duration::from_secs(10_000);
    let env = start_with(cfg, HttpSettings::default()).await;
    let sid = env.active_server("a").await;
    let vol = env.available_volume("v").await;
    let attachments = format!("/v2.1/servers/{sid}/os-volume_attachments");
    env.post(
        Service::Compute,
        &attachments,
        Some("2.79"),
        json!({"volumeAttachment": {"volumeId": vol}}),
    )
    .await
    .expect(200);
    env.wait_volume(&vol, "in-use").await;
    let attachment = format!("{attachments}/{vol}");
    let detach = || env.delete(Service::Compute, &attachment, None);
    detach().await.expect(202);
    assert_eq!(
        env.volume(&vol).await.json()["volume"]["status"],
        "detaching"
    );
    let s = env.server(&sid, "2.79").await;
    assert_eq!(
        s["os-extended-volumes:volumes_attached"],
        json!([{"id": vol, "delete_on_termination": false}])
    );
    let listed = env
        .get(Service::Compute, &attachments, Some("2.79"))
        .await
        .expect(200)
        .json();
    assert_eq!(listed["volumeAttachments"][0]["volumeId"], vol.as_str());
    let r = detach().await.expect(400);
    assert_eq!(
        r.json(),
        json!({"badRequest": {"code": 400, "message": "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach."}})
    );
}

/// A soft-deleted server nobody force-deletes goes when Nova's reclaim
/// comes.
#[tokio::test]
async fn a_soft_deleted_server_goes_when_its_reclaim_comes() {
    let env = soft_deleting_cloud(Duration::from_secs(1)).await;
    let a = env.active_server("a").await;
    env.delete(Service::Compute, &format!("/v2.1/servers/{a}"), None)
        .await
        .expect(204);
    wait_until(|| async {
        let r = env
            .get(Service::Compute, &format!("/v2.1/servers/{a}"), None)
            .await;
        (r.status == 404).then_some(())
    })
    .await;
}

/// A cloud whose policy makes `forceDelete` admin-only
/// (`os_compute_api:os-deferred-delete:force`): the project's forceDelete
/// of a SOFT_DELETED server answers Nova's 403 policy fault and the server
/// stays SOFT_DELETED; once the policy lets the project again, it goes.
#[tokio::test]
async fn a_force_delete_the_policy_refuses_is_403_and_changes_nothing() {
    let env = soft_deleting_cloud(Duration::from_secs(3600)).await;
    let a = env.active_server("a").await;
    env.delete(Service::Compute, &format!("/v2.1/servers/{a}"), None)
        .await
        .expect(204);
    let action = format!("/v2.1/servers/{a}/action");
    let force = || {
        env.post(
            Service::Compute,
            &action,
            None,
            json!({"forceDelete": null}),
        )
    };
    env.face.faults().refuse_force_delete(true);
    let r = force().await.expect(403);
    assert!(r.json()["forbidden"]["message"]
        .as_str()
        .unwrap()
        .contains("os_compute_api:os-deferred-delete:force"));
    let s = env.server(&a, "2.79").await;
    assert_eq!(s["status"], "SOFT_DELETED");
    assert_eq!(s["OS-EXT-STS:task_state"], Value::Null);
    env.face.faults().clear();
    force().await.expect(202);
    // Gone long before the hour's reclaim: the forceDelete took effect. (Its
    // `deleting` task state lasts milliseconds at this time scale, too
    // short to be sure to see.)
    wait_until(|| async {
        let r = env
            .get(
                Service::Compute,
                &format!("/v2.1/servers/{a}"),
                Some("2.79"),
            )
            .await;
        (r.status.as_u16() == 404).then_some(())
    })
    .await;
}

/// The demo binary listening on 127.0.0.1:0 and writing its clouds.yaml
/// into a temporary dir of its own (`name` and this process' id), with
/// `args` besides: it, what it printed on stdout up to the end of its
/// clouds.yaml, and the clouds.yaml's path.
async fn demo_binary(
    name: &str,
    args: &[&str],
) -> (tokio::process::Child, String, std::path::PathBuf) {
    use tokio::io::AsyncBufReadExt;
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let written = dir.join("clouds.yaml");
    // A port free on every address: a local MySQL may hold 3306, and the
    // binary refuses to start then.
    let mysql_port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudsim"))
        .args(["--listen", "127.0.0.1:0", "--clouds-yaml"])
        .arg(&written)
        .args(["--mysql-port", &mysql_port.to_string()])
        .args(args)
        // Colour is judged by the terminal alone in these tests.
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        // Its few log lines fit in the pipe, read or not.
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("identity_api_version") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap();
    (child, printed, written)
}

#[tokio::test]
async fn the_demo_binary_serves_and_prints_a_clouds_yaml() {
    let (mut child, printed, written) =
        demo_binary("cloudsim-bin", &["--cloud-name", "demo"]).await;
    let yaml: serde_yaml::Value = serde_yaml::from_str(&printed).unwrap();
    let auth_url = yaml["clouds"]["demo"]["auth"]["auth_url"]
        .as_str()
        .unwrap()
        .to_string();
    // The file is the clouds.yaml alone, without the comments above it.
    let uncommented: String = printed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(std::fs::read_to_string(&written).unwrap(), uncommented);
    let r = reqwest::Client::new()
        .post(format!("{auth_url}/auth/tokens"))
        .json(&auth_body("pool", "poolpass"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(written.parent().unwrap());
}

/// What a warmpoold config with `kind = "openstack"` names, and what an
/// Allocate names, is printed at start (as comments: stdout stays a
/// clouds.yaml), so that trying the driver on cloudsim needs no source.
#[tokio::test]
async fn the_demo_binary_prints_what_a_warmpoold_config_names() {
    let (mut child, printed, written) = demo_binary("cloudsim-names", &[]).await;
    let settings = HttpSettings::default();
    let tenant_net = &settings.networks[1];
    for expected in [
        format!("# clouds.yaml: {}, cloud \"cloudsim\"", written.display()),
        format!("# management network: {}", settings.networks[0].name),
        format!(
            "# tenant network: {} = {}, subnet {}",
            tenant_net.name, tenant_net.id, tenant_net.subnet_id
        ),
        "# flavors: db.small, db.medium, db.large".to_owned(),
        "# availability zones: az1, az2".to_owned(),
        "# images: mysql-8.0".to_owned(),
        "# security groups: default".to_owned(),
    ] {
        assert!(
            printed.lines().any(|l| l.starts_with(&expected)),
            "{expected:?} not in:\n{printed}"
        );
    }
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(written.parent().unwrap());
}

/// Logs written to a file or a pipe (not a terminal) carry no ANSI colour
/// codes, as warmpoold's do not.
#[tokio::test]
async fn the_demo_binarys_logs_to_a_pipe_are_not_coloured() {
    use tokio::io::AsyncReadExt;
    let (mut child, _, written) = demo_binary("cloudsim-logs", &[]).await;
    // The clouds.yaml is printed after both start-up lines are logged.
    child.kill().await.unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(logs.contains("wrote clouds.yaml"), "{logs}");
    assert!(!logs.contains('\x1b'), "{logs:?}");
    let _ = std::fs::remove_dir_all(written.parent().unwrap());
}
