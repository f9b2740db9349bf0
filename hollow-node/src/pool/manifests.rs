//! Mirrored pools as files for Kustomize: one YAML stream, or one file per pool and a
//! kustomization.yaml listing them.

use std::path::Path;

use super::mirror::MirroredPool;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("encoding pool {pool} as YAML: {source}")]
    Yaml {
        pool: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One pool as a YAML document, after a comment saying how many Nodes it stands for.
pub fn document(m: &MirroredPool) -> Result<String, ManifestError> {
    let body = serde_yaml::to_string(&m.pool).map_err(|source| ManifestError::Yaml {
        pool: m.pool.name().to_string(),
        source,
    })?;
    Ok(format!(
        "# mirrored from {} node(s)\n{body}",
        m.source_nodes
    ))
}

/// Every pool, as one multi-document YAML stream.
pub fn stream(pools: &[MirroredPool]) -> Result<String, ManifestError> {
    let docs = pools.iter().map(document).collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}

/// The kustomization.yaml listing `<pool>.yaml` for every pool.
pub fn kustomization(pools: &[MirroredPool]) -> String {
    let mut out = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    if pools.is_empty() {
        out = out.replace("resources:\n", "resources: []\n");
    }
    for m in pools {
        out.push_str(&format!("  - {}.yaml\n", m.pool.name()));
    }
    out
}

/// Writes `<pool>.yaml` per pool and the kustomization.yaml into `dir` (created if missing).
/// Pool names are DNS names (validated), so they are safe file names.
pub fn write_dir(dir: &Path, pools: &[MirroredPool]) -> Result<(), ManifestError> {
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| ManifestError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| ManifestError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    for m in pools {
        write(&dir.join(format!("{}.yaml", m.pool.name())), &document(m)?)?;
    }
    write(&dir.join("kustomization.yaml"), &kustomization(pools))
}

#[cfg(test)]
mod tests {
    use super::super::spec::{HollowNodePool, PoolSpec};
    use super::*;

    fn pool(name: &str, replicas: i64) -> MirroredPool {
        MirroredPool {
            pool: HollowNodePool::new(
                name,
                PoolSpec {
                    replicas,
                    ..Default::default()
                },
            ),
            source_nodes: replicas as usize,
        }
    }

    #[test]
    fn stream_round_trips() {
        let pools = [pool("a", 2), pool("b", 3)];
        let text = stream(&pools).expect("yaml");
        let back: Vec<HollowNodePool> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).expect("doc"))
            .collect();
        let want: Vec<HollowNodePool> = pools.iter().map(|m| m.pool.clone()).collect();
        assert_eq!(back, want);
        assert!(text.starts_with("# mirrored from 2 node(s)\n"), "{text}");
        let cases = [
            (
                "two pools",
                kustomization(&pools),
                "  - a.yaml\n  - b.yaml\n",
            ),
            ("none", kustomization(&[]), "resources: []\n"),
        ];
        for (name, got, want) in cases {
            assert!(got.ends_with(want), "{name}: {got}");
        }
    }
}
