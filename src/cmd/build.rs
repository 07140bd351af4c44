//! `kiln build`: plan the Dockerfile, execute the plan, write the outputs
//! (`--dry-run` stops after planning and prints the plan).

use super::{chain, exit, read_dockerfile, render_all, Failure};
use crate::build::{self, BuildOptions, NamedContext, NamedResolver, StepError};
use crate::cli::{BuildArgs, DockerfileSource, DryRun, Progress};
use crate::export::{self, Export, Output};
use crate::layer::compress::Compression;
use crate::plan::plan_source;
use crate::plan::render;
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::Path;

/// Runs `kiln build`; returns the exit code.
pub fn run(args: &BuildArgs) -> Result<i32, Failure> {
    let started = std::time::Instant::now();
    let mut settings = args
        .plan
        .resolve(&args.context, &|k| std::env::var(k).ok())
        .map_err(|e| Failure::usage(e.0))?;
    args.validate().map_err(|e| Failure::usage(e.0))?;
    if !args.context.is_dir() {
        return Err(Failure::usage(format!(
            "the build context {} is not a directory",
            args.context.display()
        )));
    }
    // As buildx: SOURCE_DATE_EPOCH from the environment is a build-arg.
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        settings
            .build_args
            .entry("SOURCE_DATE_EPOCH".into())
            .or_insert(v);
    }
    let sde = match settings
        .build_args
        .get("SOURCE_DATE_EPOCH")
        .map(String::as_str)
    {
        None | Some("") => None,
        // Times must fit RFC 3339's four-digit years, or Docker and
        // skopeo cannot read the config.
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|t| (0..=253_402_300_799).contains(t))
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "SOURCE_DATE_EPOCH={v:?} is not a number of seconds since the epoch \
                         between 0 and 253402300799 (year 9999)"
                    ))
                })?,
        ),
    };
    // `type=registry` (and `type=image,push=true`) outputs push, as
    // --push does, to their `name=`s or the -t names.
    let mut push = args.push;
    let mut tags = args.tags.clone();
    let mut specs = Vec::new();
    for o in &args.outputs {
        match registry_output(o).map_err(Failure::usage)? {
            Some((p, names)) => {
                push |= p;
                tags.extend(names);
            }
            None => specs.push(o.clone()),
        }
    }
    tags.dedup();
    if push && tags.is_empty() {
        return Err(Failure::usage(
            "--push (or --output type=registry) needs a name to push to: -t NAME, or name= in the output",
        ));
    }
    let mut outputs: Vec<Output> = specs
        .iter()
        .map(|o| Output::parse(o))
        .collect::<Result<_, _>>()
        .map_err(Failure::usage)?;
    let load_to = if args.load {
        let docker = which("docker").ok_or_else(|| {
            Failure::usage("--load needs the docker command and a running Docker daemon")
        })?;
        Some(docker)
    } else {
        None
    };
    let settings_extra = compat_settings(args)?;
    let multi = settings.platforms.len() > 1;
    if multi {
        if load_to.is_some() {
            return Err(Failure::usage(
                "--load takes one platform: docker load reads no image index (buildx refuses \
                 too); build one --platform to load, or push, or use -o type=oci",
            ));
        }
        if outputs.iter().any(|o| o.kind == export::Kind::Docker) {
            return Err(Failure::usage(
                "-o type=docker takes one platform: a docker archive holds no image index \
                 (buildx refuses too); use -o type=oci or --push for several",
            ));
        }
    } else if let Some(a) = settings_extra.annotations.iter().find(|a| {
        matches!(
            a.on,
            AnnotationTarget::Index | AnnotationTarget::IndexDescriptor
        )
    }) {
        let kind = if a.on == AnnotationTarget::Index {
            "index"
        } else {
            "index-descriptor"
        };
        return Err(Failure::usage(format!(
            "--annotation {kind}:{}=…: a single-platform image has no index (its manifest is \
             the image); annotate the manifest, or build several --platform values",
            a.key
        )));
    }
    let cache_from: Vec<std::path::PathBuf> = args
        .cache_from
        .iter()
        .filter_map(|c| local_cache(c, "src", "--cache-from").transpose())
        .collect::<Result<_, _>>()?;
    let cache_to: Vec<std::path::PathBuf> = args
        .cache_to
        .iter()
        .filter_map(|c| local_cache(c, "dest", "--cache-to").transpose())
        .collect::<Result<_, _>>()?;
    // A tarball is no use on a terminal (buildx refuses too).
    if outputs.iter().any(|o| o.dest == export::Dest::Stdout)
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(Failure::usage(
            "refusing to write an archive to the terminal: redirect stdout, or use dest=FILE",
        ));
    }
    let mut named = BTreeMap::new();
    for c in &args.build_contexts {
        let (name, value) = c.split_once('=').unwrap_or((c, ""));
        let mut ctx = NamedContext::parse(value).map_err(Failure::usage)?;
        if let NamedContext::Dir(d) = &ctx {
            // Relative to the working directory, as buildx takes it.
            ctx = NamedContext::Dir(d.clone());
        }
        named.insert(name.to_string(), ctx);
    }
    let compression = match (
        &args.compression,
        outputs.iter().find_map(|o| o.compression),
    ) {
        (Some(c), _) => Compression::parse(c).map_err(|e| Failure::usage(e.to_string()))?,
        (None, Some(c)) => c,
        (None, None) => Compression::Gzip { level: 6 },
    };

    let src = read_dockerfile(&settings)?;
    // A real build asks registries for base images' configs; a dry run
    // plans offline, from what the store has (if there is one).
    let store_root = args
        .cache_dir
        .clone()
        .unwrap_or_else(crate::store::default_root);
    let store = if args.dry_run.is_none() || store_root.join("blobs").is_dir() {
        Some(Store::open(&store_root).map_err(build_failure)?)
    } else {
        None
    };
    let resolver = NamedResolver {
        named: &named,
        store: store.as_ref(),
        pull: args.pull,
        offline: args.dry_run.is_some(),
    };
    // One plan per platform: the automatic platform ARGs differ.
    let mut plans = Vec::new();
    for platform in &settings.platforms {
        match plan_source(&src, &settings.plan_options_for(platform), &resolver) {
            Ok(p) => plans.push(p),
            Err(e) => {
                eprint!("{}", render_all(&[e], &settings.display_name, &src));
                return Ok(exit::DOCKERFILE);
            }
        }
    }
    let Some(plan) = plans.first() else {
        return Err(Failure::usage(
            "--platform needs a value such as linux/amd64",
        ));
    };
    // Each platform's plan may warn (its ARGs differ); each warning once.
    let mut warnings = Vec::new();
    for w in plans.iter().flat_map(|p| &p.warnings) {
        if !warnings.contains(w) {
            warnings.push(w.clone());
        }
    }
    let mode = args.progress.resolve(args.quiet);
    // Lines for people: not with -q, and not between rawjson's objects.
    let quiet = matches!(mode, Progress::Quiet | Progress::Rawjson);
    eprint!("{}", render_all(&warnings, &settings.display_name, &src));
    if let Some(violations) = plan.lint_violations_in(&warnings) {
        eprintln!("error: {violations} (the Dockerfile sets check=error=true)");
        return Ok(exit::DOCKERFILE);
    }
    let dockerfile_path = match &settings.dockerfile {
        DockerfileSource::Path(p) => Some(p.as_path()),
        DockerfileSource::Stdin => None,
    };
    let ignore =
        crate::context::load_ignore(&args.context, dockerfile_path).map_err(|e| Failure {
            code: exit::BUILD,
            message: e,
        })?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut bopts = BuildOptions {
        context: args.context.clone(),
        ignore,
        named,
        source_date_epoch: sde,
        compression,
        threads,
        work: store_root.join("tmp"),
        pull: args.pull,
        materialize: outputs
            .iter()
            .any(|o| matches!(o.kind, export::Kind::Local | export::Kind::Tar)),
        quiet,
        secrets: BTreeMap::new(),
        ssh: BTreeMap::new(),
        network: args.network.map(|n| match n {
            crate::cli::Network::Default => "default".to_string(),
            crate::cli::Network::None => "none".to_string(),
            crate::cli::Network::Host => "host".to_string(),
        }),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        max_parallelism: match args.max_parallelism {
            Some(0) => return Err(Failure::usage("--max-parallelism must be at least 1")),
            Some(n) => n,
            None => threads,
        },
        dockerfile_id: match &settings.dockerfile {
            DockerfileSource::Path(p) => std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .to_string_lossy()
                .into_owned(),
            DockerfileSource::Stdin => "-".into(),
        },
        dry_run: false,
        on_layer: None,
        add_hosts: settings_extra.add_hosts.clone(),
        shm_size: settings_extra.shm_size,
        ulimits: settings_extra.ulimits.clone(),
        label: None,
        numbered_after: 0,
        cancel: Default::default(),
        slots: None,
    };
    match args.dry_run {
        Some(DryRun::Json) => {
            if let [one] = plans.as_slice() {
                outln!("{}", render::to_json(one));
            } else {
                let all: Vec<String> = plans.iter().map(render::to_json).collect();
                outln!("[{}]", all.join(","));
            }
            return Ok(0);
        }
        Some(DryRun::Text) => {
            for plan in &plans {
                out!("{}", render::to_text(plan));
                // What the cache would give, step by step.
                if let Some(store) = &store {
                    bopts.dry_run = true;
                    bopts.max_parallelism = 1;
                    outln!("cache ({}):", store_root.display());
                    let lines = crate::progress::plain::Lines::default();
                    // A closed stdout (`| head`) ends the listing, not
                    // the process.
                    let log = |e: &crate::progress::Event| {
                        use std::io::Write as _;
                        let mut out = std::io::stdout().lock();
                        for line in lines.render(e) {
                            let _ = writeln!(out, "  {line}");
                        }
                    };
                    if let Err(e) = build::dry_run(plan, &bopts, store, &log) {
                        eprintln!("error: {}", chain(&e));
                        return Ok(exit::BUILD);
                    }
                }
            }
            return Ok(0);
        }
        None => {}
    }
    if outputs.is_empty() && !push && load_to.is_none() && !quiet {
        eprintln!(
            "warning: no --output given: the result stays in kiln's store only; \
             use -o type=oci,dest=FILE, -o type=docker,dest=FILE or -o DIR"
        );
    }
    let mut secrets = std::collections::BTreeMap::new();
    for spec in &args.secrets {
        let (id, source) = build::mounts::parse_secret(spec).map_err(Failure::usage)?;
        secrets.insert(id, source);
    }
    let mut ssh_sources = Vec::new();
    for spec in &args.ssh {
        ssh_sources.push(build::mounts::parse_ssh(spec).map_err(Failure::usage)?);
    }
    let store = match store {
        Some(s) => s,
        None => Store::open(&store_root).map_err(build_failure)?,
    };
    let work = tempfile::Builder::new()
        .prefix(&Store::temp_prefix("build"))
        .tempdir_in(store_root.join("tmp"))
        .map_err(|e| {
            build_failure(format!(
                "cannot create a work directory in {}: {e}",
                store_root.display()
            ))
        })?;
    crate::snapshot::overlay::probe(&store_root.join("tmp"));
    crate::cleanup::install();
    crate::cleanup::register(work.path());
    // Agent sockets to forward; key files get an ssh-agent of the build's
    // own, stopped when the build ends.
    let mut ssh = std::collections::BTreeMap::new();
    let mut _agents = Vec::new();
    for (id, source) in ssh_sources {
        let socket = match source {
            build::mounts::SshSource::Socket(s) => s,
            build::mounts::SshSource::Keys(keys) => {
                let agent = build::mounts::Agent::start(&keys, work.path())
                    .map_err(|e| build_failure(format!("--ssh {id}: {}", super::chain(&e))))?;
                let s = agent.socket.clone();
                _agents.push(agent);
                s
            }
        };
        ssh.insert(id, socket);
    }
    // Dropped before `work`: the work directory's mounts go first.
    let _mounts = Unmount;
    bopts.secrets = secrets;
    bopts.ssh = ssh;
    bopts.work = work.path().to_path_buf();
    for dir in &cache_from {
        match crate::store::transfer::import(&store, dir) {
            Ok(n) if !quiet => eprintln!("imported {n} cache entries from {}", dir.display()),
            Ok(_) => {}
            Err(e) => eprintln!("warning: --cache-from {}: {}", dir.display(), chain(&e)),
        }
    }
    // With --push, layers go up while later steps run.
    let early =
        (push && !tags.is_empty()).then(|| crate::registry::EarlyPush::start(&tags, store.clone()));
    if let Some(e) = &early {
        bopts.on_layer = Some(std::sync::Arc::new(e.queue()));
    }
    // Step events go to the renderer main chose.
    let log = |e: &crate::progress::Event| crate::progress::emit(e);
    // A build per platform, at once; each has its own work directory and
    // step numbers, and shows its platform before each stage's name.
    let mut jobs = Vec::new();
    let mut numbered_after = 0;
    if multi {
        bopts.slots = Some(std::sync::Arc::new(build::Slots::new(
            bopts.max_parallelism,
        )));
    }
    for plan in plans {
        let mut o = bopts.clone();
        if multi {
            let dir = plan.platform.to_string().replace('/', "_");
            o.work = bopts.work.join(dir);
            o.label = Some(plan.platform.to_string());
            o.numbered_after = numbered_after;
            numbered_after += build::step_count(&plan);
        }
        jobs.push((plan, o));
    }
    let result = build::build_platforms(&jobs, &store, &log);
    bopts.on_layer = None;
    drop(jobs);
    // After a failure the uploads in flight are abandoned, not awaited.
    let early = match (early, result.is_ok()) {
        (Some(e), true) => e.finish(),
        _ => Default::default(),
    };
    let results = match result {
        Ok(b) => b,
        Err(e) => {
            crate::progress::finish();
            return Ok(report(&e, &settings.display_name, &src));
        }
    };
    let mut counts = build::Counts::default();
    let mut builts = Vec::new();
    for (b, c) in results {
        counts.cached += c.cached;
        counts.ran += c.ran;
        counts.keys.extend(c.keys);
        builts.push(b);
    }
    let (mut index_annotations, mut index_descriptor_annotations) =
        (BTreeMap::new(), BTreeMap::new());
    for a in &settings_extra.annotations {
        match a.on {
            AnnotationTarget::Index => {
                index_annotations.insert(a.key.clone(), a.value.clone());
            }
            AnnotationTarget::IndexDescriptor => {
                index_descriptor_annotations.insert(a.key.clone(), a.value.clone());
            }
            _ => {}
        }
    }
    let asked_platform = !args.plan.platform.is_empty();
    for built in &mut builts {
        if asked_platform {
            built.claim_platform();
        }
        let config = &mut built.image.config;
        for l in &args.labels {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            config.config.labels.insert(k.to_string(), v.to_string());
        }
        let platform = built.platform.clone();
        for a in &settings_extra.annotations {
            let (on, only) = match &a.on {
                AnnotationTarget::Manifest(p) => (&mut built.image.annotations, p),
                AnnotationTarget::ManifestDescriptor(p) => {
                    (&mut built.image.descriptor_annotations, p)
                }
                AnnotationTarget::Index | AnnotationTarget::IndexDescriptor => continue,
            };
            if only.as_ref().is_none_or(|p| *p == platform) {
                on.insert(a.key.clone(), a.value.clone());
            }
        }
    }
    if load_to.is_some() {
        // --load: a docker archive, fed to `docker load`.
        outputs.push(Output {
            kind: export::Kind::Docker,
            dest: export::Dest::Path(bopts.work.join("load.tar")),
            compression: None,
            oci_mediatypes: false,
            names: Vec::new(),
            platform_split: true,
        });
    }
    let parts: Vec<export::Part> = builts
        .iter()
        .map(|b| export::Part {
            image: &b.image,
            platform: &b.platform,
            rootfs: &b.rootfs,
            owners: &b.owners,
        })
        .collect();
    let export = Export {
        parts: &parts,
        store: &store,
        tags: &tags,
        source_date_epoch: sde,
        index_annotations: &index_annotations,
        index_descriptor_annotations: &index_descriptor_annotations,
    };
    for out in &outputs {
        if let Err(e) = export::write(out, &export) {
            eprintln!("error: {}", chain(&e));
            return Ok(exit::BUILD);
        }
    }
    if let Some(docker) = &load_to {
        let archive = bopts.work.join("load.tar");
        outputs.retain(|o| o.dest != export::Dest::Path(archive.clone()));
        let o = std::process::Command::new(docker)
            .args(["load", "-q", "-i"])
            .arg(&archive)
            .output()
            .map_err(|e| build_failure(format!("--load: cannot run {}: {e}", docker.display())))?;
        if !o.status.success() {
            crate::progress::finish();
            eprintln!(
                "error: --load: docker load failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return Ok(exit::BUILD);
        }
    }
    if push {
        if let Err(e) = push_image(&export, quiet, early) {
            crate::progress::finish();
            eprintln!("error: {}", chain(&e));
            if let Some(h) = crate::registry::hint(&e) {
                eprintln!("hint: {h}");
            }
            return Ok(if crate::registry::is_registry_error(&e) {
                exit::REGISTRY
            } else {
                exit::BUILD
            });
        }
    }
    let oci = !outputs.iter().any(|o| !o.oci_mediatypes);
    let tree = export::Tree::new(&export, oci).map_err(|e| build_failure(e.to_string()))?;
    let top = tree.top().map_err(build_failure)?;
    let digest = top.digest.clone();
    // The image ID, as buildx gives it: the config's digest, or for
    // several platforms the index's.
    let image_id = match (&tree.index, tree.images.as_slice()) {
        (None, [one]) => one.config.digest.clone(),
        _ => digest.clone(),
    };
    // `kiln images` and `kiln inspect` know what was built with -t (as
    // it would be pushed: OCI media types).
    if let (false, Ok(t)) = (tags.is_empty(), export::Tree::new(&export, true)) {
        let mut stored = Ok(String::new());
        for d in &t.images {
            stored = stored
                .and_then(|_| store.put_bytes(&d.config.bytes))
                .and_then(|_| store.put_bytes(&d.manifest.bytes));
        }
        if let Some(i) = &t.index {
            stored = stored.and_then(|_| store.put_bytes(&i.bytes));
        }
        if let (Ok(_), Ok(top)) = (stored, t.top()) {
            for tag in &tags {
                let name = format!("built:{}", export::normalize_name(tag));
                let _ = store.set_ref(&name, &top.digest);
            }
        }
    }
    if let Some(p) = &args.iidfile {
        write_file(p, image_id.as_bytes())?;
    }
    if let Some(p) = &args.metadata_file {
        let mut m = serde_json::json!({
            "containerimage.digest": digest,
            "containerimage.descriptor": {
                "mediaType": top.media_type,
                "digest": digest,
                "size": top.bytes.len(),
            },
        });
        if let (None, [one]) = (&tree.index, tree.images.as_slice()) {
            m["containerimage.config.digest"] = one.config.digest.clone().into();
        }
        if !tags.is_empty() {
            let names: Vec<String> = tags.iter().map(|t| export::normalize_name(t)).collect();
            m["image.name"] = names.join(",").into();
        }
        let text = serde_json::to_vec_pretty(&m).map_err(|e| build_failure(e.to_string()))?;
        write_file(p, &text)?;
    }
    for dir in &cache_to {
        if let Err(e) = crate::store::transfer::export(&store, &counts.keys, dir) {
            eprintln!("error: --cache-to {}: {}", dir.display(), chain(&e));
            return Ok(exit::BUILD);
        }
    }
    crate::progress::finish();
    let secs = started.elapsed().as_secs_f64();
    let mut went: Vec<String> = outputs.iter().map(describe_output).collect();
    if load_to.is_some() {
        went.push("loaded into docker".into());
    }
    if push {
        went.extend(
            tags.iter()
                .map(|t| format!("pushed to {}", export::normalize_name(t))),
        );
    }
    if args.quiet || mode == Progress::Quiet {
        // As buildx: the image ID on stdout, unless stdout carries an
        // archive.
        if !outputs.iter().any(|o| o.dest == export::Dest::Stdout) {
            outln!("{image_id}");
        }
    } else if mode == Progress::Rawjson {
        crate::progress::json::result(serde_json::json!({
            "digest": digest,
            "config": image_id,
            "seconds": secs,
            "cached": counts.cached,
            "ran": counts.ran,
            "outputs": went,
        }));
    } else {
        let went = if went.is_empty() {
            "kept in the store".to_string()
        } else {
            went.join(", ")
        };
        let platforms = if multi {
            format!(" for {} platforms", settings.platforms.len())
        } else {
            String::new()
        };
        eprintln!(
            "built {digest}{platforms} in {secs:.1}s ({} steps cached, {} ran): {went}",
            counts.cached, counts.ran
        );
    }
    Ok(0)
}

/// A `--output` of `type=registry` or `type=image`: whether it pushes,
/// and its `name=`s; `None` for other types.
fn registry_output(spec: &str) -> Result<Option<(bool, Vec<String>)>, String> {
    let fields: Vec<(&str, &str)> = spec.split(',').filter_map(|f| f.split_once('=')).collect();
    let kind = fields.iter().find(|(k, _)| *k == "type").map(|(_, v)| *v);
    let registry = match kind {
        Some("registry") => true,
        Some("image") => false,
        _ => return Ok(None),
    };
    let mut push = registry;
    let mut names = Vec::new();
    for (k, v) in &fields {
        match *k {
            "type" => {}
            "name" => names.extend(v.split(' ').filter(|n| !n.is_empty()).map(str::to_string)),
            "push" => push = *v == "true",
            // Attributes of BuildKit's image exporter kiln has no use for.
            "oci-mediatypes" | "compression" | "compression-level" | "force-compression"
            | "store" | "unpack" | "rewrite-timestamp" => {}
            other => {
                return Err(format!(
                    "--output {spec:?}: kiln does not know the attribute {other:?} of type={}",
                    kind.unwrap_or("")
                ))
            }
        }
    }
    Ok(Some((push, names)))
}

/// The directory of a `type=local` cache spec (`key` is `src` or `dest`);
/// other types are ignored with a warning (a pipeline's registry or gha
/// cache must not fail the build).
fn local_cache(spec: &str, key: &str, flag: &str) -> Result<Option<std::path::PathBuf>, Failure> {
    let fields: BTreeMap<&str, &str> = spec.split(',').filter_map(|f| f.split_once('=')).collect();
    match fields.get("type").copied() {
        Some("local") => match fields.get(key) {
            Some(d) if !d.is_empty() => Ok(Some(std::path::PathBuf::from(d))),
            _ => Err(Failure::usage(format!(
                "{flag} {spec:?}: type=local needs {key}=DIR"
            ))),
        },
        other => {
            eprintln!(
                "warning: {flag} {spec:?}: kiln keeps cache of type=local only; {} ignored",
                other.map_or("this".to_string(), |t| format!("type={t}"))
            );
            Ok(None)
        }
    }
}

/// Settings from the flags docker's CLI has and kiln maps onto its own.
struct CompatSettings {
    add_hosts: Vec<(String, String)>,
    shm_size: Option<u64>,
    ulimits: Vec<(String, u64, u64)>,
    annotations: Vec<Annotation>,
}

/// An `--annotation`: where it goes, and its key and value.
#[derive(Debug, Clone, PartialEq)]
struct Annotation {
    on: AnnotationTarget,
    key: String,
    value: String,
}

#[derive(Debug, Clone, PartialEq)]
enum AnnotationTarget {
    /// `manifest:` (the default), or `manifest[PLATFORM]:` for one.
    Manifest(Option<crate::plan::Platform>),
    /// `manifest-descriptor:`: the descriptor naming a manifest, in the
    /// index, or for one image in an OCI layout's index.json.
    ManifestDescriptor(Option<crate::plan::Platform>),
    /// `index:`: a multi-platform image's index.
    Index,
    /// `index-descriptor:`: the index's descriptor in an OCI layout.
    IndexDescriptor,
}

/// Parses `[TYPE[PLATFORM]:]KEY=VALUE`, as buildx does: types `manifest`
/// (the default) and `index`, several comma-separated.
fn parse_annotation(a: &str) -> Result<Vec<Annotation>, String> {
    // A type list is lower-case words with optional [PLATFORM]s before
    // the first `:`; otherwise the `:` is the key's (`com.example:k=v`).
    let is_types = |t: &str| {
        t.split(',').all(|one| {
            let kind = one.split_once('[').map_or(one, |(k, _)| k);
            !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        })
    };
    let (targets, kv) = match a.split_once('=') {
        Some((left, _)) if left.contains(':') => match a.split_once(':') {
            Some((t, rest)) if is_types(t) => (t, rest),
            _ => ("manifest", a),
        },
        _ => ("manifest", a),
    };
    let (k, v) = kv
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("--annotation {a:?}: expected KEY=VALUE"))?;
    let mut out = Vec::new();
    for target in targets.split(',') {
        let (kind, platform) = match target.split_once('[') {
            Some((kind, p)) => {
                let p = p.strip_suffix(']').ok_or_else(|| {
                    format!("--annotation {a:?}: expected TYPE[PLATFORM]:KEY=VALUE")
                })?;
                let p = crate::plan::Platform::parse(p)
                    .map_err(|e| format!("--annotation {a:?}: {e}"))?;
                (kind, Some(p))
            }
            None => (target, None),
        };
        let on = match (kind, platform) {
            ("manifest", p) => AnnotationTarget::Manifest(p),
            ("manifest-descriptor", p) => AnnotationTarget::ManifestDescriptor(p),
            ("index", None) => AnnotationTarget::Index,
            ("index-descriptor", None) => AnnotationTarget::IndexDescriptor,
            ("index" | "index-descriptor", Some(_)) => {
                return Err(format!(
                    "--annotation {a:?}: an index has no platform; use {kind}:KEY=VALUE"
                ))
            }
            (other, _) => {
                return Err(format!(
                    "--annotation {a:?}: the types are manifest, manifest-descriptor, index \
                     and index-descriptor, not {other:?} (manifest:K=V, \
                     manifest[linux/arm64]:K=V, index:K=V)"
                ))
            }
        };
        out.push(Annotation {
            on,
            key: k.to_string(),
            value: v.to_string(),
        });
    }
    Ok(out)
}

fn compat_settings(args: &BuildArgs) -> Result<CompatSettings, Failure> {
    let mut add_hosts = Vec::new();
    for h in &args.add_hosts {
        // buildx takes NAME:IP and NAME=IP.
        let (name, ip) = h
            .split_once('=')
            .or_else(|| h.split_once(':'))
            .filter(|(n, i)| !n.is_empty() && !i.is_empty())
            .ok_or_else(|| Failure::usage(format!("--add-host {h:?}: expected NAME:IP")))?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Failure::usage(format!(
                "--add-host {h:?}: {ip:?} is not an IP address"
            )));
        }
        add_hosts.push((name.to_string(), ip.to_string()));
    }
    let shm_size = match &args.shm_size {
        Some(s) => Some(
            crate::dockerfile::mount::parse_size(s)
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Failure::usage(format!("--shm-size: {s:?} is not a size such as 64m or 1g"))
                })?,
        ),
        None => None,
    };
    let ulimits = args
        .ulimits
        .iter()
        .map(|u| crate::exec::parse_ulimit(u).map_err(Failure::usage))
        .collect::<Result<Vec<_>, _>>()?;
    for a in &args.allow {
        match a.as_str() {
            "network.host" => {}
            "security.insecure" => {
                return Err(Failure::usage(
                    "--allow security.insecure: kiln does not run privileged steps",
                ))
            }
            other => {
                return Err(Failure::usage(format!(
                    "--allow {other:?}: the entitlements are network.host and security.insecure"
                )))
            }
        }
    }
    let off = |v: &Option<String>| v.as_deref().is_none_or(|v| v == "false" || v == "0");
    if !off(&args.provenance) || !off(&args.sbom) || !args.attest.is_empty() {
        eprintln!("warning: kiln writes no attestations (provenance, SBOM); the image has none");
    }
    let mut annotations = Vec::new();
    for a in &args.annotations {
        annotations.extend(parse_annotation(a).map_err(Failure::usage)?);
    }
    Ok(CompatSettings {
        add_hosts,
        shm_size,
        ulimits,
        annotations,
    })
}

/// `name` on the PATH.
fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Where an output went, in words.
fn describe_output(o: &Output) -> String {
    let what = match o.kind {
        export::Kind::Oci => "OCI archive",
        export::Kind::Docker => "docker archive",
        export::Kind::Local => "directory",
        export::Kind::Tar => "tar archive",
    };
    match &o.dest {
        export::Dest::Stdout => format!("{what} on stdout"),
        export::Dest::Path(p) => format!("{what} {}", p.display()),
    }
}

/// `--push`: every `-t` gets the image's blobs (those the repository lacks)
/// and then its manifest, with OCI media types; for several platforms,
/// each image's manifest by digest, then the index under the tag.
fn push_image(
    export: &Export,
    quiet: bool,
    mut early: crate::registry::early::Done,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if export.tags.is_empty() {
        anyhow::bail!("--push needs at least one -t NAME to push to");
    }
    let tree = export::Tree::new(export, true)?;
    for d in &tree.images {
        export.store.put_bytes(&d.config.bytes)?;
    }
    // Layers count once however many platforms' images share them.
    let layers: std::collections::BTreeSet<&str> = export
        .parts
        .iter()
        .flat_map(|p| p.image.layers.iter().map(|l| l.digest.as_str()))
        .collect();
    for tag in export.tags {
        let r =
            crate::registry::Reference::parse(tag).map_err(|e| anyhow::anyhow!("{tag}: {e}"))?;
        // An upload during the build failed after its retries: that is the
        // push's error.
        if let Some(e) = early.failed.remove(tag) {
            return Err(e.context(format!("pushing {r}")));
        }
        let mut client = crate::registry::Client::new(r.clone())?;
        let mut how: BTreeMap<String, crate::registry::Pushed> = BTreeMap::new();
        for (part, docs) in export.parts.iter().zip(&tree.images) {
            // The config first: it is small, and brings the push token.
            let mut blobs = vec![docs.config.digest.clone()];
            blobs.extend(part.image.layers.iter().map(|l| l.digest.clone()));
            let mut pushed = crate::registry::push_blobs(&mut client, &blobs, export.store)
                .with_context(|| format!("pushing {r}"))?;
            // What the uploads during the build (or for an earlier
            // platform) did counts as this push's.
            for (p, d) in pushed.iter_mut().zip(&blobs) {
                if let Some(e) = early.pushed.get(tag).and_then(|m| m.get(d)) {
                    if *p == crate::registry::Pushed::Exists {
                        *p = *e;
                    }
                }
                let seen = how.entry(d.clone()).or_insert(*p);
                if *seen == crate::registry::Pushed::Exists {
                    *seen = *p;
                }
            }
            // Under the tag when it is the image; by digest when an
            // index names it.
            let object = if tree.index.is_some() {
                docs.manifest.digest.as_str()
            } else {
                r.object()
            };
            client
                .push_manifest(object, docs.manifest.media_type, &docs.manifest.bytes)
                .with_context(|| format!("pushing {r}"))?;
        }
        let count = |p| layers.iter().filter(|d| how.get(**d) == Some(&p)).count();
        let (uploaded, mounted) = (
            count(crate::registry::Pushed::Uploaded),
            count(crate::registry::Pushed::Mounted),
        );
        let top = tree.top()?;
        let digest = match &tree.index {
            Some(index) => client
                .push_manifest(r.object(), index.media_type, &index.bytes)
                .with_context(|| format!("pushing {r}"))?,
            None => top.digest.clone(),
        };
        if !quiet {
            let platforms = match tree.images.len() {
                1 => String::new(),
                n => format!(", {n} platforms"),
            };
            eprintln!(
                "pushed {r}@{digest} ({uploaded} of {} layers uploaded, {mounted} mounted{platforms})",
                layers.len()
            );
        }
    }
    Ok(())
}

/// Unmounts the build's overlays when dropped.
struct Unmount;

impl Drop for Unmount {
    fn drop(&mut self) {
        crate::snapshot::overlay::unmount_all();
    }
}

fn write_file(p: &Path, bytes: &[u8]) -> Result<(), Failure> {
    std::fs::write(p, bytes)
        .map_err(|e| build_failure(format!("cannot write {}: {e}", p.display())))
}

fn build_failure(e: impl ToString) -> Failure {
    Failure {
        code: exit::BUILD,
        message: e.to_string(),
    }
}

/// Prints a build failure: for a step, the Dockerfile around its
/// instruction (marked), its last lines of output, the error and a hint;
/// returns the exit code (a registry's failure has its own).
fn report(e: &anyhow::Error, file: &str, src: &str) -> i32 {
    let Some(step) = e.downcast_ref::<StepError>() else {
        eprintln!("error: {}", chain(e));
        if let Some(h) = crate::registry::hint(e) {
            eprintln!("hint: {h}");
        }
        return if crate::registry::is_registry_error(e) {
            exit::REGISTRY
        } else {
            exit::BUILD
        };
    };
    eprint!("{}", excerpt(file, src, step.line, step.end_line));
    if !step.tail.is_empty() {
        eprintln!("its last {} lines of output:", step.tail.len());
        for l in &step.tail {
            eprintln!("    {l}");
        }
    }
    eprintln!("error: {}", step.message);
    if let Some(h) = &step.hint {
        eprintln!("hint: {h}");
    }
    if step.registry {
        exit::REGISTRY
    } else {
        exit::BUILD
    }
}

/// The Dockerfile around lines `first..=last`, numbered, those lines
/// marked, as BuildKit shows a failing instruction.
fn excerpt(file: &str, src: &str, first: usize, last: usize) -> String {
    const AROUND: usize = 2;
    let lines: Vec<&str> = src.lines().collect();
    if first == 0 || first > lines.len() {
        return String::new();
    }
    let last = last.clamp(first, lines.len());
    let from = first.saturating_sub(AROUND).max(1);
    let to = (last + AROUND).min(lines.len());
    let width = to.to_string().len().max(3);
    let mut out = format!("{file}:{first}\n--------------------\n");
    for n in from..=to {
        let mark = if (first..=last).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(
            " {n:>width$} | {mark} {}\n",
            lines[n - 1].trim_end_matches('\r')
        ));
    }
    out.push_str("--------------------\n");
    out
}

#[cfg(test)]
mod tests {
    use super::{parse_annotation, AnnotationTarget};

    /// Types are lower-case words before the first `:`; a key may hold a
    /// `:` of its own.
    #[test]
    fn annotations_as_buildx_reads_them() {
        let one = |a: &str| {
            let v = parse_annotation(a).expect("valid");
            assert_eq!(v.len(), 1, "{a}");
            (v[0].on.clone(), v[0].key.clone(), v[0].value.clone())
        };
        let arm = crate::plan::Platform::parse("linux/arm64").expect("platform");
        assert_eq!(
            one("k=v:w"),
            (AnnotationTarget::Manifest(None), "k".into(), "v:w".into())
        );
        assert_eq!(
            one("com.example:k=v"),
            (
                AnnotationTarget::Manifest(None),
                "com.example:k".into(),
                "v".into()
            )
        );
        assert_eq!(
            one("manifest-descriptor[linux/arm64]:k=v").0,
            AnnotationTarget::ManifestDescriptor(Some(arm))
        );
        let both = parse_annotation("manifest,index:k=v").expect("valid");
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].on, AnnotationTarget::Index);
        assert!(parse_annotation("layer:k=v").is_err());
        assert!(parse_annotation("index[linux/amd64]:k=v").is_err());
        assert!(parse_annotation("=v").is_err());
    }

    #[test]
    fn excerpts_mark_the_instruction() {
        let src = "FROM x\nENV A=1\n# c\nRUN a && \\\n    b\nCMD c\nLABEL l=1\nUSER u\n";
        assert_eq!(
            super::excerpt("Dockerfile", src, 4, 5),
            "Dockerfile:4\n--------------------\n   2 |     ENV A=1\n   3 |     # c\n   4 | >>> RUN a && \\\n   5 | >>>     b\n   6 |     CMD c\n   7 |     LABEL l=1\n--------------------\n"
        );
        assert_eq!(super::excerpt("D", "FROM x\n", 9, 9), "");
    }
}
