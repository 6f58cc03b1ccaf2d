//! `crds/` and the chart's `crds/` must be exactly what `vk-eci crd` generates: regenerate
//! with `hack/gen-crds.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = std::env::temp_dir().join(format!("vk-eci-crds-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_vk-eci"))
        .args(["crd", "--output-dir"])
        .arg(&generated)
        .status()
        .unwrap();
    assert!(status.success());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut names: Vec<String> = std::fs::read_dir(&generated)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "spotrotationpolicies.spot.vk-eci.io.yaml",
            "spotrotations.spot.vk-eci.io.yaml"
        ]
    );
    for dir in ["crds", "charts/vk-eci/crds"] {
        for name in &names {
            let fresh = std::fs::read_to_string(generated.join(name)).unwrap();
            let on_disk = std::fs::read_to_string(root.join(dir).join(name)).unwrap_or_default();
            assert!(
                fresh == on_disk,
                "{dir}/{name} is stale: run hack/gen-crds.sh and commit the result"
            );
        }
    }
    std::fs::remove_dir_all(generated).unwrap();
}
