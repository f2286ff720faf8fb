//! `crds/` is generated from the Rust types; this fails when it is stale.

use kube::CustomResourceExt;

#[test]
fn crd_file_matches_the_rust_types() {
    let generated = serde_yaml::to_string(&ssegate::api::Route::crd()).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/routes.ssegate.dev.yaml");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == on_disk,
        "crds/routes.ssegate.dev.yaml is stale; regenerate it with:\n  cargo run -- crd > crds/routes.ssegate.dev.yaml"
    );
}
