//! The tests of `ablate`.

use super::*;

#[test]
fn spread_is_mean_sample_std_min_and_max() {
    // (values, mean, sample std)
    let table: [(&[f64], f64, f64); 3] = [
        (&[0.25], 0.25, 0.0),
        (&[0.2, 0.3], 0.25, 0.070_710_678_118_654_75),
        (&[1.0, 2.0, 4.0], 7.0 / 3.0, 1.527_525_231_651_947),
    ];
    for (values, mean, std) in table {
        let s = Spread::of(values).unwrap();
        assert!(
            (s.mean - mean).abs() < 1e-15 && (s.std - std).abs() < 1e-15,
            "{values:?}: {s:?}"
        );
        assert_eq!((s.min, s.max), (values[0], values[values.len() - 1]));
    }
    assert_eq!(Spread::of(&[]), None);
}

/// The error of `byol ablate` on `grid` at `seeds` in a new folder named after `tag`, and that
/// folder's path (for the caller to check that nothing trained, then remove).
fn ablate_error(tag: &str, grid: &str, seeds: Vec<u64>) -> (String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("byol-grid-{tag}-{}", std::process::id()));
    let grid: Grid = toml::from_str(grid).unwrap();
    struct Quiet;
    impl crate::train::Observer for Quiet {}
    let options = AblationOptions {
        seeds,
        linear: false,
    };
    let e = ablate(
        "small-cpu",
        &Settings::default(),
        &grid,
        &dir,
        &options,
        &mut Quiet,
    );
    (e.unwrap_err().to_string(), dir)
}

/// A variant whose overrides do not resolve is named in the error, before anything trains.
#[test]
fn a_bad_variant_is_named() {
    let grid = "[[variant]]\nname = \"fine\"\n[[variant]]\nname = \"too-fast\"\nset = [\"optim.base-lr=-1.0\"]\n";
    let (e, dir) = ablate_error("bad", grid, vec![0]);
    assert!(
        e.contains("optim.base-lr") && e.contains("variant `too-fast`"),
        "{e}"
    );
    assert!(
        !dir.join("fine").exists(),
        "a run trained before the bad variant was found"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A seed given twice is refused before anything trains (it would be counted as two seeds).
#[test]
fn a_seed_given_twice_is_refused() {
    let (e, dir) = ablate_error("seeds", "[[variant]]\nname = \"base\"\n", vec![0, 1, 0]);
    assert!(e.contains("seed 0 appears twice"), "{e}");
    assert!(
        !dir.join("base").exists(),
        "a run trained before the seeds were checked"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn grid_names_are_checked() {
    let dir = std::env::temp_dir().join(format!("byol-grid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("g.toml");
    std::fs::write(&p, "[[variant]]\nname = \"a b\"\n").unwrap();
    assert!(Grid::load(&p).unwrap_err().to_string().contains("letters"));
    std::fs::write(&p, "[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"\n").unwrap();
    assert!(Grid::load(&p).unwrap_err().to_string().contains("twice"));
    std::fs::write(&p, "[[variant]]\nname = \"a\"\nsett = []\n").unwrap();
    assert!(Grid::load(&p).unwrap_err().to_string().contains("sett"));
    std::fs::write(&p, "[[variant]]\nname = \"a\"\nset = [\"seed=1\"]\n").unwrap();
    assert_eq!(
        Grid::load(&p).unwrap().variant[0].set,
        vec!["seed=1".to_string()]
    );
    std::fs::write(&p, "[[variant]]\nname = \"a\"\nrelative-to = \"b\"\n").unwrap();
    assert!(
        Grid::load(&p)
            .unwrap_err()
            .to_string()
            .contains("must name another variant")
    );
    std::fs::write(&p, "[[variant]]\nname = \"a\"\npaper-delta = -2.2\n").unwrap();
    assert!(
        Grid::load(&p)
            .unwrap_err()
            .to_string()
            .contains("give `relative-to`")
    );
}

/// Every grid in `ablations/` loads and each of its variants resolves over the base it documents
/// (`vit-cifar10-cpu` for the `vit-` grids, `cifar10-cpu` for the others), so that a grid never
/// fails after hours of its earlier runs.
#[test]
fn every_shipped_grid_resolves() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ablations");
    let mut grids = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let grid = Grid::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let vit = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vit-"));
        let base = if vit {
            "vit-cifar10-cpu"
        } else {
            "cifar10-cpu"
        };
        for v in &grid.variant {
            let settings = Settings {
                set: v.set.clone(),
                ..Default::default()
            };
            settings
                .resolve(base)
                .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), v.name));
        }
        grids += 1;
    }
    assert!(grids >= 6, "{grids} grids in {}", dir.display());
}

/// The difference to the `relative-to` variant pairs the seeds: a variant 2 points below at
/// seed 0 and 4 points below at seed 1 is −3 ± 1.41, whatever the spread of either alone.
#[test]
fn relative_differences_pair_the_seeds() {
    let row = |name: &str, seed: u64, top1: f64| Row {
        name: name.into(),
        seed,
        overrides: vec![],
        random_init: false,
        steps: 1,
        knn_top1: top1,
        knn_top5: top1,
        linear_top1: None,
        final_loss: None,
        projection_std: None,
        healthy_std: 0.1,
        collapsed: None,
        wall_seconds: 1.0,
        losses: vec![],
        evals: vec![],
        config: String::new(),
    };
    let runs = [
        row("all", 0, 0.50),
        row("all", 1, 0.30),
        row("crop", 1, 0.26),
        row("crop", 0, 0.48),
    ];
    let variant = |name: &str, to: Option<&str>| Variant {
        name: name.into(),
        set: vec![],
        random_init: false,
        relative_to: to.map(Into::into),
        paper_delta: to.map(|_| -2.2),
    };
    let grid = Grid {
        variant: vec![variant("all", None), variant("crop", Some("all"))],
    };
    let s = summarise(&runs, &grid);
    assert!(s[0].relative.is_none());
    let d = s[1].relative.as_ref().unwrap().knn_top1_delta;
    assert!(
        (d.mean + 0.03).abs() < 1e-12 && (d.std - 0.02f64.sqrt() / 10.0).abs() < 1e-12,
        "{d:?}"
    );
    assert_eq!(
        s[1].relative.as_ref().unwrap().paper_delta,
        Some(-2.2),
        "the grid's published change travels with ours"
    );
}
