"""An outcome commit says what it changed, old -> new, whatever the Env repo's files hold."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.controller.changes import MAX_LINES, MAX_VALUE, change_lines

KUSTOMIZATION = b"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [deployment.yaml]
images:
  - name: ghcr.io/stefanprodan/podinfo
    newTag: 6.1.0 # {"$imagepolicy": "flux-system:podinfo:tag"}
"""


def test_a_kustomize_tag_bump_reads_old_to_new() -> None:
    after = KUSTOMIZATION.replace(b"newTag: 6.1.0", b"newTag: 6.2.0")
    lines = change_lines(
        {"apps/podinfo/kustomization.yaml": KUSTOMIZATION, "apps/podinfo/exp.yaml": b"x: 1\n"},
        {"apps/podinfo/kustomization.yaml": after, "apps/podinfo/exp.yaml": None},
    )
    assert lines == [
        "Changes:",
        "  apps/podinfo/exp.yaml: removed",
        "  apps/podinfo/kustomization.yaml: newTag 6.1.0 -> 6.2.0",
    ]


def test_a_file_changed_elsewhere_says_changed_and_an_unchanged_one_is_left_out() -> None:
    deployment = b"spec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n"
    lines = change_lines(
        {"a.yaml": deployment, "b.yaml": b"same\n"},
        {"a.yaml": deployment.replace(b"1", b"3"), "b.yaml": b"same\n", "c.yaml": b"new\n"},
    )
    assert lines == ["Changes:", "  a.yaml: changed", "  c.yaml: added"]


def test_hostile_values_are_shortened_made_printable_and_the_files_capped() -> None:
    long = b"image: " + b"x" * 10_000 + b"\n"
    escape = b'image: "evil\x1b[2Jname"\n'
    before = {f"f{i:03d}.yaml": b"a: 1\n" for i in range(100)}
    before |= {"long.yaml": b"image: short\n", "esc.yaml": b"image: plain\n"}
    after = dict.fromkeys(before) | {"long.yaml": long, "esc.yaml": escape}
    lines = change_lines(before, after)
    assert len(lines) == 1 + MAX_LINES + 1
    assert lines[-1] == f"  ... and {len(after) - MAX_LINES} more files"
    assert all(line.isprintable() for line in lines)
    assert "  esc.yaml: image plain -> evil?[2Jname" in lines
    assert max(len(line) for line in lines) < 2 * MAX_VALUE + 40


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=30),
        st.tuples(st.one_of(st.none(), st.binary()), st.one_of(st.none(), st.binary())),
        max_size=30,
    )
)
def test_any_files_give_a_bounded_printable_answer(
    files: dict[str, tuple[bytes | None, ...]],
) -> None:
    before = {path: old for path, (old, _new) in files.items()}
    after = {path: new for path, (_old, new) in files.items()}
    lines = change_lines(before, after)
    assert len(lines) <= MAX_LINES + 2
    assert all(line.isprintable() for line in lines)
    changed = sum(1 for old, new in files.values() if old != new)
    assert (lines == []) == (changed == 0)
