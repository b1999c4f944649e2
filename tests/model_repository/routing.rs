//! Where requests go: versions, aliases, a weighted canary split, sticky
//! sessions and mirrored (shadow) copies.

use serde_json::json;

use super::*;

fn two_versions() -> RepoServer {
    RepoServer::start(roomy(), |root| {
        tiny_version(root, "m", 3, 30);
        tiny_version(root, "m", 4, 40);
        settings(root, "m", "version_policy = \"all\"\n");
    })
}

#[test]
fn a_90_10_split_lands_within_binomial_bounds_and_sessions_stick() {
    let server = two_versions();
    let r = server.admin(
        "PUT",
        "/v2/repository/models/m/aliases/canary",
        &json!({"versions": [{"version": 3, "weight": 90}, {"version": 4, "weight": 10}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let card = server.card("m@canary");
    assert_eq!(card["version"], 3);
    assert_eq!(
        card["target"]["versions"][1],
        json!({"version": 4, "weight": 10})
    );
    let n = 1000;
    let fours = (0..n)
        .filter(|_| server.complete("m@canary", &[], json!({"max_tokens": 1})).0 == 4)
        .count();
    // Binomial(1000, 0.1): mean 100, standard deviation 9.5; 5 of them either side.
    assert!(
        (52..=148).contains(&fours),
        "{fours} of {n} went to version 4"
    );
    // The same session always lands on the same version, by `user` or header.
    for i in 0..20 {
        let user = format!("user-{i}");
        let first = server
            .complete("m@canary", &[], json!({"user": user, "max_tokens": 1}))
            .0;
        for _ in 0..5 {
            let again = server
                .complete("m@canary", &[], json!({"user": user, "max_tokens": 1}))
                .0;
            assert_eq!(again, first, "{user}");
        }
        let header = [("x-session-id", user.as_str())];
        let first = server
            .complete("m@canary", &header, json!({"max_tokens": 1}))
            .0;
        for _ in 0..5 {
            assert_eq!(
                server
                    .complete("m@canary", &header, json!({"max_tokens": 1}))
                    .0,
                first
            );
        }
    }
}

#[test]
fn mirrored_requests_never_reach_the_client() {
    let server = two_versions();
    let r = server.admin(
        "PUT",
        "/v2/repository/models/m/aliases/prod",
        &json!({"version": 3, "mirror": {"version": 4, "percent": 100}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, text3) = server.complete("m:3", &[], json!({}));
    let shadow = server
        .models
        .resolve(Some("m:4"), None)
        .expect("ready")
        .model
        .engine
        .clone();
    let before = shadow.stats().generated_tokens;
    for _ in 0..10 {
        let (version, text) = server.complete("m@prod", &[], json!({}));
        assert_eq!((version, &text), (3, &text3));
    }
    common::wait_for(
        "the shadow's answers",
        std::time::Duration::from_secs(60),
        || shadow.stats().generated_tokens >= before + 40 && shadow.is_idle(),
    );
    let metrics = common::request(server.addr, "GET", "/metrics", b"").text();
    let line = "tessera_mirrored_requests_total{model=\"m\",outcome=\"accepted\",version=\"4\"} 10";
    assert!(metrics.contains(line), "{line} in\n{metrics}");
}

#[test]
fn versions_and_aliases_are_listed_and_answered_by_their_version() {
    let server = two_versions();
    let r = server.admin(
        "PUT",
        "/v2/repository/models/m/aliases/prod",
        &json!({"version": 3}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = server
        .cards()
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, ["m", "m:3", "m:4", "m@prod"]);
    // Triton's per-model readiness.
    let ready = |path: &str| common::request(server.addr, "GET", path, b"");
    let r = ready("/v2/models/m/ready");
    assert_eq!((r.status, r.json()["version"].as_u64()), (200, Some(4)));
    assert_eq!(ready("/v2/models/m/versions/3/ready").status, 200);
    assert_eq!(ready("/v2/models/m/versions/9/ready").status, 404);
    assert_eq!(ready("/v2/models/nope/ready").status, 404);
    // A bare name without a default alias is the highest ready version.
    assert_eq!(server.complete("m", &[], json!({})).0, 4);
    assert_eq!(server.complete("m:3", &[], json!({})).0, 3);
    assert_eq!(server.complete("m@prod", &[], json!({})).0, 3);
    for (model, status) in [("m:9", 404), ("m@nope", 404), ("other", 404)] {
        let r = common::post(
            server.addr,
            "/v1/completions",
            &json!({"model": model, "prompt": "hi"}),
        );
        assert_eq!(r.status, status, "{model}");
        assert_eq!(r.json()["error"]["code"], "model_not_found");
    }
    // Deleting the alias; a rollback without a previous target is a 400.
    let r = server.admin(
        "POST",
        "/v2/repository/models/m/aliases/prod/rollback",
        &json!({}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = server.admin("DELETE", "/v2/repository/models/m/aliases/prod", &json!({}));
    assert_eq!(r.status, 204, "{}", r.text());
    let r = common::post(
        server.addr,
        "/v1/completions",
        &json!({"model": "m@prod", "prompt": "hi"}),
    );
    assert_eq!(r.status, 404);
    // Unloading drains and frees: the version leaves, the other serves.
    let r = server.admin(
        "POST",
        "/v2/repository/models/m/unload",
        &json!({"parameters": {"version": 4}}),
    );
    assert_eq!((r.status, r.json()["versions"].clone()), (200, json!([4])));
    server.wait_status("m:4", "unavailable");
    assert_eq!(server.card("m:4")["resident_bytes"], 0);
    assert_eq!(ready("/v2/models/m/versions/4/ready").status, 503);
    assert_eq!(server.complete("m", &[], json!({})).0, 3);
}
