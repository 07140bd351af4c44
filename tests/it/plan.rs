//! Planner tests: ARG scoping, target pruning, DAG edges, and how each
//! instruction's arguments are resolved.

use kiln::plan::{plan_source, Base, NoResolver, Op, Plan, PlanOptions, Platform, Source, Stage};
use std::collections::BTreeMap;

fn opts(args: &[(&str, &str)], target: Option<&str>) -> PlanOptions {
    PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        target: target.map(str::to_string),
        platform: Platform::parse("linux/arm64").expect("platform"),
        build_platform: Platform::parse("linux/amd64").expect("platform"),
        ..PlanOptions::default()
    }
}

fn plan(src: &str) -> Plan {
    plan_with(src, &[], None)
}

fn plan_with(src: &str, args: &[(&str, &str)], target: Option<&str>) -> Plan {
    match plan_source(src, &opts(args, target), &NoResolver) {
        Ok(p) => p,
        Err(e) => panic!("plan failed: {}:{}: {}", e.pos.line, e.pos.col, e.message),
    }
}

fn stage<'a>(p: &'a Plan, name: &str) -> &'a Stage {
    p.stages
        .iter()
        .find(|s| s.display_name() == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

/// The env a RUN step sees, as a map.
fn run_env(op: &Op) -> BTreeMap<String, String> {
    match op {
        Op::Run { env, .. } => env.iter().cloned().collect(),
        other => panic!("not a RUN: {other:?}"),
    }
}

fn run_argv(op: &Op) -> Vec<String> {
    match op {
        Op::Run { argv, .. } => argv.clone(),
        other => panic!("not a RUN: {other:?}"),
    }
}

fn rules(p: &Plan) -> Vec<&'static str> {
    p.warnings.iter().filter_map(|w| w.rule).collect()
}

#[test]
fn global_args_feed_from_but_need_redeclaring_in_a_stage() {
    let p = plan("ARG TAG=1.0\nARG IMG=alpine\nFROM $IMG:$TAG\nRUN echo\nARG TAG\nRUN echo\n");
    let st = &p.stages[0];
    assert_eq!(
        st.base,
        Base::Image {
            reference: "alpine:1.0".into()
        }
    );
    assert!(
        !run_env(&st.steps[0].op).contains_key("TAG"),
        "TAG must not leak before ARG TAG"
    );
    assert_eq!(
        run_env(&st.steps[2].op).get("TAG").map(String::as_str),
        Some("1.0")
    );
}

#[test]
fn build_args_override_defaults_everywhere() {
    let src = "ARG TAG=1.0\nFROM alpine:$TAG\nARG TAG\nARG MODE=debug\nRUN echo\n";
    let p = plan_with(src, &[("TAG", "2.0"), ("MODE", "release")], None);
    assert_eq!(
        p.stages[0].base,
        Base::Image {
            reference: "alpine:2.0".into()
        }
    );
    let env = run_env(&p.stages[0].steps[2].op);
    assert_eq!(env["TAG"], "2.0");
    assert_eq!(env["MODE"], "release");
}

#[test]
fn platform_args_are_automatic_in_from_and_declared_in_stages() {
    let src = "FROM --platform=$BUILDPLATFORM golang AS b\nRUN echo\nARG TARGETARCH TARGETOS BUILDARCH\nARG TARGETVARIANT=v9\nRUN echo\n";
    let p = plan(src);
    let st = &p.stages[0];
    assert_eq!(
        st.platform.as_ref().map(|p| p.to_string()).as_deref(),
        Some("linux/amd64")
    );
    assert!(!run_env(&st.steps[0].op).contains_key("TARGETARCH"));
    let env = run_env(&st.steps.last().expect("step").op);
    assert_eq!(env["TARGETARCH"], "arm64");
    assert_eq!(env["TARGETOS"], "linux");
    assert_eq!(env["BUILDARCH"], "amd64");
    assert_eq!(
        env["TARGETVARIANT"], "v9",
        "a default beats the automatic value, as in BuildKit"
    );
}

#[test]
fn env_wins_over_arg_and_pairs_see_the_old_env() {
    let src = "FROM scratch\nARG V=arg\nENV V=env\nENV a=1\nENV a=2 b=$a\nRUN echo\n";
    let p = plan(src);
    let env = run_env(&p.stages[0].steps.last().expect("step").op);
    assert_eq!(env["V"], "env");
    assert_eq!(env["b"], "1", "all pairs of one ENV see the env before it");
    assert_eq!(
        env["PATH"],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

#[test]
fn stage_args_are_inherited_by_child_stages() {
    let p = plan("FROM alpine AS a\nARG X=1\nFROM a\nRUN echo\n");
    assert_eq!(run_env(&p.stages[1].steps[0].op)["X"], "1");
}

#[test]
fn unused_build_args_warn_but_proxy_args_do_not() {
    let p = plan_with(
        "FROM alpine\nARG USED\nRUN echo\n",
        &[("USED", "1"), ("UNUSED", "2"), ("https_proxy", "x")],
        None,
    );
    let w: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(w, vec!["One or more build-args [UNUSED] were not consumed"]);
    let Op::Run { proxy, env, .. } = &p.stages[0].steps[1].op else {
        panic!("run")
    };
    assert_eq!(proxy, &vec![("https_proxy".to_string(), "x".to_string())]);
    assert!(
        !env.iter().any(|(k, _)| k == "https_proxy"),
        "proxies stay out of the env"
    );
}

#[test]
fn undefined_arg_in_from_warns() {
    let p = plan("ARG TAG=1\nFROM alpine${TAGG}\n");
    let w = p
        .warnings
        .iter()
        .find(|w| w.rule == Some("UndefinedArgInFrom"))
        .expect("warning");
    assert_eq!(w.pos.line, 2);
    assert!(
        w.message
            .contains("'TAGG' is not declared (did you mean TAG?)"),
        "{}",
        w.message
    );
}

const MULTI: &str = "\
FROM golang AS build
RUN go build
FROM build AS test
RUN go test
FROM alpine AS tools
RUN apk add x
FROM scratch AS final
COPY --from=build /out /app
COPY --from=2 /bin/x /x
RUN --mount=type=bind,from=busybox:1.36,target=/bb true
";

#[test]
fn target_prunes_stages_it_does_not_need() {
    let p = plan(MULTI);
    let names: Vec<String> = p.stages.iter().map(Stage::display_name).collect();
    assert_eq!(
        names,
        vec!["build", "tools", "final"],
        "test is not needed by final"
    );
    assert_eq!(p.pruned, vec!["test"]);
    assert_eq!(stage(&p, "final").deps, vec![0, 2]);
    assert_eq!(stage(&p, "final").image_deps, vec!["busybox:1.36"]);
    assert_eq!(p.order.last(), Some(&3));

    let t = plan_with(MULTI, &[], Some("TEST"));
    let names: Vec<String> = t.stages.iter().map(Stage::display_name).collect();
    assert_eq!(names, vec!["build", "test"]);
    assert_eq!(stage(&t, "test").base, Base::Stage { index: 0 });
}

#[test]
fn unknown_target_is_an_error_with_a_suggestion() {
    let err = plan_source(MULTI, &opts(&[], Some("finall")), &NoResolver).expect_err("must fail");
    assert!(
        err.message
            .contains("target stage \"finall\" could not be found (did you mean \"final\"?)"),
        "{}",
        err.message
    );
}

#[test]
fn copy_and_mount_sources_resolve() {
    let p = plan(MULTI);
    let f = stage(&p, "final");
    let Op::Copy(c) = &f.steps[0].op else {
        panic!("copy")
    };
    assert_eq!(c.source, Source::Stage { index: 0 });
    assert_eq!(c.dest, "/app");
    let Op::Copy(c) = &f.steps[1].op else {
        panic!("copy")
    };
    assert_eq!(c.source, Source::Stage { index: 2 });
    let Op::Run { mounts, .. } = &f.steps[2].op else {
        panic!("run")
    };
    assert_eq!(
        mounts[0].from_source,
        Some(Source::Image {
            reference: "busybox:1.36".into()
        })
    );
}

#[test]
fn from_a_later_stage_name_is_an_image() {
    // BuildKit only matches earlier stages: `FROM app` before `AS app` is an image.
    let src = "FROM app\nFROM alpine AS app\nFROM app\n";
    let all = PlanOptions {
        all_stages: true,
        ..opts(&[], None)
    };
    let p = plan_source(src, &all, &NoResolver).expect("plan");
    let bases: Vec<Base> = p.stages.iter().map(|s| s.base.clone()).collect();
    assert_eq!(
        bases[0],
        Base::Image {
            reference: "app".into()
        }
    );
    assert_eq!(bases[2], Base::Stage { index: 1 });
}

#[test]
fn onbuild_triggers_run_in_the_child_stage_only() {
    let src = "FROM alpine AS base\nONBUILD RUN echo trigger\nONBUILD ENV T=1\nFROM base AS child\nRUN echo own\nFROM child AS grandchild\nRUN echo gc\n";
    let p = plan(src);
    let child = stage(&p, "child");
    assert!(child.steps[0].onbuild && child.steps[1].onbuild);
    assert_eq!(
        run_argv(&child.steps[0].op),
        vec!["/bin/sh", "-c", "echo trigger"]
    );
    assert_eq!(run_env(&child.steps[2].op)["T"], "1");
    let gc = stage(&p, "grandchild");
    assert!(
        gc.steps.iter().all(|s| !s.onbuild),
        "triggers are not inherited by grandchildren"
    );
}

#[test]
fn run_heredocs_become_commands_as_in_buildkit() {
    let src = "FROM alpine\nRUN <<EOF\necho a\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\nRUN cat <<A > /f\nbody\nA\nRUN <<-EOT\n\techo tabs\n\tEOT\n";
    let p = plan(src);
    let steps = &p.stages[0].steps;
    assert_eq!(run_argv(&steps[0].op), vec!["/bin/sh", "-c", "echo a\n"]);
    let Op::Run { argv, files, .. } = &steps[1].op else {
        panic!()
    };
    assert_eq!(argv, &vec!["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(files[0].path, "/dev/pipes/EOF");
    assert!(files[0].data.starts_with("#!/usr/bin/env python3\n"));
    assert_eq!(
        run_argv(&steps[2].op),
        vec!["/bin/sh", "-c", "cat <<A > /f\nbody\nA"]
    );
    assert_eq!(run_argv(&steps[3].op), vec!["/bin/sh", "-c", "echo tabs\n"]);
}

#[test]
fn shell_instruction_changes_shell_form_and_workdir_resolves_paths() {
    let src = "FROM alpine\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\nWORKDIR /app\nWORKDIR src\nRUN make\nCOPY . .\nCOPY a ../b\nCMD make run\nENTRYPOINT [\"tini\"]\n";
    let p = plan(src);
    let s = &p.stages[0].steps;
    assert!(matches!(&s[2].op, Op::Workdir { path } if path == "/app/src"));
    assert_eq!(
        run_argv(&s[3].op),
        vec!["/bin/bash", "-eo", "pipefail", "-c", "make"]
    );
    assert!(matches!(&s[3].op, Op::Run { workdir, .. } if workdir == "/app/src"));
    assert!(matches!(&s[4].op, Op::Copy(c) if c.dest == "/app/src/"));
    assert!(matches!(&s[5].op, Op::Copy(c) if c.dest == "/app/b"));
    assert!(matches!(&s[6].op, Op::Cmd { argv, shell_form: true } if argv[0] == "/bin/bash"));
    assert!(
        matches!(&s[7].op, Op::Entrypoint { argv, shell_form: false } if argv == &vec!["tini".to_string()])
    );
}

#[test]
fn copy_heredocs_expand_unless_quoted_and_keep_quotes() {
    let src = "FROM alpine\nENV NAME=kiln\nCOPY <<EOF /a\necho \"hi $NAME\"\nEOF\nCOPY <<'EOF' /b\necho $NAME\nEOF\n";
    let p = plan(src);
    let s = &p.stages[0].steps;
    let Op::Copy(a) = &s[1].op else { panic!() };
    assert_eq!(a.inline[0].data, "echo \"hi kiln\"\n");
    let Op::Copy(b) = &s[2].op else { panic!() };
    assert_eq!(b.inline[0].data, "echo $NAME\n");
}

#[test]
fn expansion_applies_where_docker_applies_it() {
    let src = "FROM alpine\nARG V=1.2 P=8080 U=app D=/srv\nENV X=$V\nLABEL v=$V\nUSER $U\nWORKDIR $D\nEXPOSE $P 53/udp\nVOLUME $D/data\nSTOPSIGNAL SIG${V:+TERM}\nCOPY --chown=$U:$U app-$V.tar $D/\nRUN echo $V\nCMD echo $V\n";
    let p = plan(src);
    let s = &p.stages[0].steps;
    let find = |pred: &dyn Fn(&Op) -> bool| {
        s.iter()
            .find(|st| pred(&st.op))
            .map(|st| st.op.clone())
            .expect("op")
    };
    assert!(
        matches!(find(&|o| matches!(o, Op::Env { .. })), Op::Env { pairs } if pairs[0].1 == "1.2")
    );
    assert!(
        matches!(find(&|o| matches!(o, Op::Label { .. })), Op::Label { pairs } if pairs[0].1 == "1.2")
    );
    assert!(matches!(find(&|o| matches!(o, Op::User { .. })), Op::User { user } if user == "app"));
    assert!(
        matches!(find(&|o| matches!(o, Op::Workdir { .. })), Op::Workdir { path } if path == "/srv")
    );
    assert!(
        matches!(find(&|o| matches!(o, Op::Expose { .. })), Op::Expose { ports } if ports == vec!["8080/tcp", "53/udp"])
    );
    assert!(
        matches!(find(&|o| matches!(o, Op::Volume { .. })), Op::Volume { paths } if paths == vec!["/srv/data"])
    );
    assert!(
        matches!(find(&|o| matches!(o, Op::StopSignal { .. })), Op::StopSignal { signal } if signal == "SIGTERM")
    );
    let Op::Copy(c) = find(&|o| matches!(o, Op::Copy(_))) else {
        panic!()
    };
    assert_eq!(
        (c.chown.as_deref(), c.sources[0].as_str(), c.dest.as_str()),
        (Some("app:app"), "app-1.2.tar", "/srv/")
    );
    // Shell-form RUN and CMD text is left to the shell.
    assert_eq!(
        run_argv(&find(&|o| matches!(o, Op::Run { .. })))[2],
        "echo $V"
    );
    assert!(
        matches!(find(&|o| matches!(o, Op::Cmd { .. })), Op::Cmd { argv, .. } if argv[2] == "echo $V")
    );
}

#[test]
fn mount_defaults_follow_buildkit() {
    let src = "FROM alpine\nWORKDIR /w\nRUN --mount=type=secret,id=npmrc --mount=type=cache,target=cache/go --mount=type=ssh --mount=type=bind,target=src true\n";
    let p = plan(src);
    let Op::Run { mounts, .. } = &p.stages[0].steps[1].op else {
        panic!()
    };
    let m: Vec<_> = mounts.iter().map(|m| &m.mount).collect();
    assert_eq!(m[0].target.as_deref(), Some("/run/secrets/npmrc"));
    assert!(m[0].readonly);
    assert_eq!(m[1].target.as_deref(), Some("/w/cache/go"));
    assert_eq!(
        m[1].id.as_deref(),
        Some("cache/go"),
        "cache id is the target as written"
    );
    assert!(!m[1].readonly);
    assert_eq!(m[2].target.as_deref(), Some("/run/buildkit/ssh_agent.0"));
    assert_eq!(m[2].id.as_deref(), Some("default"));
    assert_eq!(m[3].target.as_deref(), Some("/w/src"));
    assert_eq!(mounts[3].from_source, None);
}

#[test]
fn build_checks_fire_and_can_be_skipped() {
    let src = "FROM alpine as Build\nMAINTAINER me\nCMD echo hi\nCMD echo again\nENV DB_PASSWORD=x\nENV legacy form\nWORKDIR rel\nFROM build\n";
    let r = rules(&plan(src));
    for rule in [
        "FromAsCasing",
        "StageNameCasing",
        "MaintainerDeprecated",
        "JSONArgsRecommended",
        "MultipleInstructionsDisallowed",
        "SecretsUsedInArgOrEnv",
        "LegacyKeyValueFormat",
        "WorkdirRelativePath",
    ] {
        assert!(r.contains(&rule), "{rule} missing from {r:?}");
    }
    let skipped = format!("# check=skip=MaintainerDeprecated,FromAsCasing\n{src}");
    let r = rules(&plan(&skipped));
    assert!(
        !r.contains(&"MaintainerDeprecated") && !r.contains(&"FromAsCasing"),
        "{r:?}"
    );
    assert!(r.contains(&"StageNameCasing"));
    let all = format!("# check=skip=all\n{src}");
    assert!(rules(&plan(&all)).is_empty());
}

#[test]
fn consistent_casing_follows_the_majority() {
    let p = plan("from alpine\nrun echo\nRUN echo\ncopy a /b\n");
    let w: Vec<_> = p
        .warnings
        .iter()
        .filter(|w| w.rule == Some("ConsistentInstructionCasing"))
        .collect();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].pos.line, 3);
    assert!(w[0].message.contains("(lowercase)"));
}

#[test]
fn json_plan_is_stable() {
    let p = plan(MULTI);
    let a = kiln::plan::render::to_json(&p);
    // The JSON is a contract for tools: a change shows up in the golden.
    let fixture = crate::util::root().join("fixtures/plan/multi-stage.json");
    if let Some(diff) = crate::util::golden(&fixture, &a) {
        panic!("{diff}");
    }
    let v: serde_json::Value = serde_json::from_str(&a).expect("valid json");
    assert_eq!(v["kiln_plan_version"], 1);
    assert_eq!(v["target"], 3);
    assert_eq!(v["stages"][2]["steps"][0]["op"], "copy");
    let text = kiln::plan::render::to_text(&p);
    assert!(
        text.contains("stage 3 [final] line 7: from scratch, needs build, tools"),
        "{text}"
    );
    assert!(text.contains("not needed by the target: test"), "{text}");
}

#[test]
fn a_from_value_close_to_a_stage_name_warns_but_stays_an_image() {
    // `bash` next to a stage `base` is most likely the image, but say so.
    let p = plan("FROM alpine AS base\nFROM alpine\nCOPY --from=bash /bin/bash /bin/bash\n");
    let Op::Copy(c) = &p.stages.last().expect("stage").steps[0].op else {
        panic!("copy")
    };
    assert_eq!(
        c.source,
        Source::Image {
            reference: "bash".into()
        }
    );
    let w = p
        .warnings
        .iter()
        .find(|w| w.rule == Some("StageNameTypo"))
        .expect("warning");
    assert!(
        w.message.contains("did you mean stage \"base\"?"),
        "{}",
        w.message
    );
    assert_eq!(
        p.warnings
            .iter()
            .filter(|w| w.rule == Some("StageNameTypo"))
            .count(),
        1
    );
}

#[test]
fn forward_references_only_matter_in_stages_that_are_built() {
    let src = "FROM alpine AS dev\nCOPY --from=prod /a /a\nFROM alpine AS prod\n";
    let p = plan_with(src, &[], Some("prod"));
    assert_eq!(p.stages.len(), 1);
    let err = plan_source(src, &opts(&[], Some("dev")), &NoResolver).expect_err("dev is built");
    assert!(
        err.message.contains("needs to be defined before"),
        "{}",
        err.message
    );
    assert_eq!((err.pos.line, err.pos.col), (2, 6));
}

#[test]
fn onbuild_copy_from_another_stage_is_a_real_dependency() {
    let src = "FROM alpine AS other\nRUN make\nFROM alpine AS base\nONBUILD COPY --from=other /a /b\nFROM base\n";
    let p = plan(src);
    let last = p.stages.last().expect("stage");
    assert_eq!(last.deps, vec![0, 1], "the trigger's --from is an edge");
    assert!(p.pruned.is_empty(), "{:?}", p.pruned);
    let Op::Copy(c) = &last.steps[0].op else {
        panic!("copy")
    };
    assert_eq!(c.source, Source::Stage { index: 0 });
}

#[test]
fn a_stage_named_scratch_wins_over_the_empty_image() {
    let p = plan("FROM alpine AS scratch\nRUN touch /x\nFROM scratch\n");
    assert_eq!(p.stages[1].base, Base::Stage { index: 0 });
    assert!(rules(&p).contains(&"ReservedStageName"));
}

#[test]
fn base_references_are_validated() {
    for (src, msg) in [
        ("FROM Alpine\n", "invalid base image reference \"Alpine\""),
        (
            "ARG TAG\nFROM alpine:$TAG\n",
            "invalid base image reference \"alpine:\"",
        ),
        (
            "FROM alpine AS builder\nFROM Builder\n",
            "invalid base image reference",
        ),
    ] {
        let err = plan_source(src, &opts(&[], None), &NoResolver).expect_err(src);
        assert!(err.message.contains(msg), "{src:?}: {}", err.message);
    }
    let err = plan_source(
        "FROM alpine AS builder\nFROM Builder\n",
        &opts(&[], None),
        &NoResolver,
    )
    .expect_err("case");
    assert!(
        err.hint
            .as_deref()
            .unwrap_or_default()
            .contains("FROM builder"),
        "{:?}",
        err.hint
    );
}

#[test]
fn variables_in_mount_options_and_checksums_are_expanded_first() {
    let sum = "sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d";
    let src = format!(
        "FROM alpine\nARG UID=1000 T=cache M=0700 SUM={sum}\nRUN --mount=type=$T,target=/x,uid=${{UID}},mode=$M true\nADD --checksum=$SUM https://example.com/x.tgz /x\n"
    );
    let p = plan(&src);
    let Op::Run { mounts, .. } = &p.stages[0].steps[4].op else {
        panic!("run")
    };
    assert_eq!(mounts[0].mount.uid, Some(1000));
    assert_eq!(mounts[0].mount.mode, Some(0o700));
    let Op::Copy(c) = &p.stages[0].steps[5].op else {
        panic!("add")
    };
    assert_eq!(c.checksum.as_deref(), Some(sum));
    // A bad value is still caught, after expansion, at the right place.
    let bad = "FROM alpine\nARG UID=me\nRUN --mount=type=cache,target=/a \\\n    --mount=type=cache,target=/x,uid=$UID true\n";
    let err = plan_source(bad, &opts(&[], None), &NoResolver).expect_err("bad uid");
    assert!(
        err.message.contains("invalid value me for uid"),
        "{}",
        err.message
    );
    assert_eq!((err.pos.line, err.pos.col), (4, 5));
    let bad_sum = "FROM alpine\nARG SUM=sha256:abc\nADD --checksum=$SUM https://example.com/x /x\n";
    let err = plan_source(bad_sum, &opts(&[], None), &NoResolver).expect_err("bad sum");
    assert!(
        err.message.contains("invalid checksum digest"),
        "{}",
        err.message
    );
}

#[test]
fn windows_targets_use_cmd_and_no_linux_path() {
    let o = PlanOptions {
        platform: Platform::parse("windows/amd64").expect("platform"),
        ..opts(&[], None)
    };
    let p = plan_source(
        "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\nRUN dir\n",
        &o,
        &NoResolver,
    )
    .expect("plan");
    let op = &p.stages[0].steps[0].op;
    assert_eq!(run_argv(op), vec!["cmd", "/S", "/C", "dir"]);
    assert!(!run_env(op).contains_key("PATH"));
}

#[test]
fn buildkit_quirks_are_kept() {
    // A bare RUN runs an empty shell command; an empty --from is the context.
    let p = plan("FROM alpine\nRUN\nCOPY --from= a /b\nVOLUME [\" /data \"]\n");
    let s = &p.stages[0].steps;
    assert_eq!(run_argv(&s[0].op), vec!["/bin/sh", "-c", ""]);
    assert!(matches!(&s[1].op, Op::Copy(c) if c.source == Source::Context));
    assert!(matches!(&s[2].op, Op::Volume { paths } if paths == &vec!["/data".to_string()]));
    // Flags BuildKit ignores are accepted with a warning.
    let p =
        plan("FROM alpine\nARG --foo=1 A=1\nSTOPSIGNAL --x 9\nHEALTHCHECK --interval=bogus NONE\n");
    assert_eq!(
        rules(&p).iter().filter(|r| **r == "IgnoredFlag").count(),
        3,
        "{:?}",
        p.warnings
    );
    // An invalid ONBUILD trigger is stored, and fails only where it runs.
    let p = plan_with(
        "FROM alpine AS base\nONBUILD FOO bar\nFROM alpine\n",
        &[],
        None,
    );
    assert!(
        rules(&p).contains(&"InvalidOnbuildTrigger"),
        "{:?}",
        p.warnings
    );
    let err = plan_source(
        "FROM alpine AS base\nONBUILD FOO bar\nFROM base\n",
        &opts(&[], None),
        &NoResolver,
    )
    .expect_err("runs");
    assert!(
        err.message.contains("unknown instruction: FOO"),
        "{}",
        err.message
    );
}

#[test]
fn heredoc_details_follow_buildkit() {
    // The shebang is looked for before `<<-` strips tabs.
    let p = plan("FROM alpine\nRUN <<-EOF\n\t#!/bin/bash\n\techo hi\n\tEOF\n");
    let Op::Run { argv, files, .. } = &p.stages[0].steps[0].op else {
        panic!("run")
    };
    assert!(files.is_empty());
    assert_eq!(argv, &vec!["/bin/sh", "-c", "#!/bin/bash\necho hi\n"]);
    // COPY heredoc bodies use `\` as escape even under `# escape=`.
    let p = plan("# escape=`\nFROM alpine\nENV HOME=/root\nCOPY <<EOF /f\na\\$HOME $HOME\nEOF\n");
    let Op::Copy(c) = &p.stages[0].steps[1].op else {
        panic!("copy")
    };
    assert_eq!(c.inline[0].data, "a$HOME /root\n");
}

#[test]
fn global_arg_defaults_are_not_expanded_when_overridden() {
    let p = plan_with(
        "ARG X=${REQ:?required}\nFROM alpine:$X\n",
        &[("X", "3")],
        None,
    );
    assert_eq!(
        p.stages[0].base,
        Base::Image {
            reference: "alpine:3".into()
        }
    );
}

#[test]
fn check_error_and_the_build_arg_override() {
    let p = plan("# check=error=true\nFROM alpine\nMAINTAINER x\n");
    assert_eq!(
        p.lint_violations().as_deref(),
        Some("lint violation found for rules: MaintainerDeprecated")
    );
    let p = plan_with(
        "FROM alpine\nMAINTAINER x\n",
        &[("BUILDKIT_DOCKERFILE_CHECK", "skip=all")],
        None,
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let p = plan("# check=skip=all;experimental=CopyIgnoredFile\nFROM alpine\n");
    assert!(p.warnings.is_empty());
}

/// Secret and ssh targets are not taken against WORKDIR (as in BuildKit,
/// where a relative one is relative to the root); kiln makes them absolute
/// and clean, so that no `..` climbs out of the root.
#[test]
fn secret_and_ssh_targets_are_rooted_not_workdir_relative() {
    let p = plan("FROM alpine\nWORKDIR /w\nRUN --mount=type=secret,id=a/b --mount=type=secret,id=t,target=rel --mount=type=ssh,target=/ --mount=type=secret,id=u,target=../../etc/x true\n");
    let Op::Run { mounts, .. } = &p.stages[0].steps[1].op else {
        panic!("run")
    };
    assert_eq!(mounts[0].mount.target.as_deref(), Some("/run/secrets/b"));
    assert_eq!(mounts[1].mount.target.as_deref(), Some("/rel"));
    assert_eq!(mounts[2].mount.target.as_deref(), Some("/"));
    assert_eq!(mounts[3].mount.target.as_deref(), Some("/etc/x"));
}
