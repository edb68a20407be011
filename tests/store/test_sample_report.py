"""The printable sample report: counts, differential with 95% intervals, reference intervals and absolute counts,
flags only where the count supports them, reviewers and sign-off, models, annotated photos, "for research use";
checked in the HTML and in the PDF's text (pdftotext), from the store, the CLI and the service."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from store_helpers import counted_doc
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.errors import ConfigError
from bloodcell.report.sample_report import render_html
from bloodcell.store.report import report_data
from bloodcell.store.samples import decide, find, finish_review, record_count, reopen, sign
from bloodcell.workflows.sample_report import write_sample_report

TYPES = {"neutrophil": 90, "lymphocyte": 8, "monocyte": 2}
SHA = "ab" * 32


def kept_sample(store, people, folder: Path, lab: str = "") -> None:
    """S-001 (of ``lab``): 100 white cells typed (90 neutrophils, 8 lymphocytes, 2 monocytes), one referred cell
    confirmed by tia, the review finished by tia and signed by sam."""
    with store.session() as session:
        record_count(session, store.photos, counted_doc(folder, types=TYPES), "tia", lab=lab,
                     classifier=("pbc8.safetensors", SHA), detector=("learned-detector", "cd" * 32))
        referred = next(c for c in find(session, "S-001").cells if c.referral_reason)
        decide(session, "S-001", referred.id, "confirm", people["tia"])
        finish_review(session, "S-001", people["tia"])
        sign(session, "S-001", people["sam"])


@pytest.fixture()
def kept(store, people, tmp_path):
    kept_sample(store, people, tmp_path / "in")
    return store


def _data(store, wbc=None):
    with store.session() as session:
        return report_data(session, find(session, "S-001"), store.photos, wbc)


def test_the_numbers_flags_and_needed_cells(kept):
    lines = {line.type: line for line in _data(kept, wbc=10.0).lines}
    assert lines["neutrophil"].percent == 90.0 and lines["neutrophil"].flag == "high"
    assert lines["neutrophil"].interval == pytest.approx((82.4, 95.1), abs=0.05)  # Clopper-Pearson, 90 of 100
    assert lines["lymphocyte"].flag == "low" and lines["monocyte"].flag == ""
    assert lines["eosinophil"].flag == "" and lines["eosinophil"].needed == 368  # 0 of 100 cannot show < 1 %
    assert lines["neutrophil"].absolute == pytest.approx(9.0) and lines["neutrophil"].absolute_flag == "high"
    assert lines["lymphocyte"].absolute == pytest.approx(0.8) and lines["lymphocyte"].absolute_flag == ""
    assert _data(kept).lines[0].absolute is None


def test_the_html_says_who_reviewed_and_signed_and_which_models(kept):
    html = render_html(_data(kept, wbc=10.0))
    row = re.search(r"<tr class='high' data-type='neutrophil'>(.*?)</tr>", html).group(1)
    assert "<td class='num'>90</td><td class='num'>90.0</td><td class='num'>82.4&ndash;95.1</td>" in row
    assert "50-70%" in row and "9.00 <strong>HIGH</strong>" in row and '<td class="flag-high">HIGH</td>' in row
    assert "below reference, not flagged: needs 368 cells" in html
    assert "<dt>Cells decided by</dt><dd>tia</dd>" in html and re.search(r"<dt>Signed off</dt><dd>by sam, 20\d\d-", html)
    assert re.search(r"<dt>Review finished</dt><dd>by tia, 20\d\d-", html) and "<dt>Reopened</dt>" not in html
    assert ("1 cell&#x27;s call decided by a person; 0 referred or doubtful cells still need a decision" in html
            and SHA in html and "learned-detector" in html)
    assert "For research use only: not validated for diagnosis." in html and "Dacie and Lewis" in html
    assert html.count("<img src='data:image/jpeg;base64,") == 1


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (Debian poppler-utils) is not installed")
def test_the_pdf_holds_the_same_numbers(kept, store_spec, tmp_path):
    path = write_sample_report(store_spec, "S-001", tmp_path / "report.pdf", wbc_per_nl=10.0)
    assert path.read_bytes()[:5] == b"%PDF-"
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    neutrophil = next(line for line in text.splitlines() if line.strip().startswith("neutrophil"))
    assert re.search(r"neutrophil\s+90\s+90\.0\s+82\.4.95\.1\s+50-70%\s+9\.00 HIGH\s+2-7\s+HIGH", neutrophil), neutrophil
    lymphocyte = next(line for line in text.splitlines() if line.strip().startswith("lymphocyte"))
    assert re.search(r"lymphocyte\s+8\s+8\.0\s+3\.5.15\.2\s+20-45%\s+0\.80\s+1-3\s+LOW", lymphocyte), lymphocyte
    flat = " ".join(text.split())
    assert "below reference, not flagged: needs 368 cells" in flat
    assert "For research use only: not validated for diagnosis" in text
    assert re.search(r"Signed off\s+by sam", text) and SHA[:40] in text.replace("\n", "")
    images = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True).stdout
    assert len(images.splitlines()) == 3  # header, rule, the one annotated photo


def test_printing_a_pdf_leaves_cut_images_refused(tmp_path):
    """Importing WeasyPrint makes Pillow accept truncated images process-wide; a cut upload must stay refused."""
    from PIL import Image, ImageFile

    from bloodcell.report.sample_report import write_pdf

    write_pdf("<p>report</p>", tmp_path / "r.pdf")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    Image.new("RGB", (64, 64), (200, 80, 90)).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:400])
    with pytest.raises(OSError), Image.open(tmp_path / "cut.jpg") as image:
        image.load()


def test_the_cli_writes_html_and_refuses_bad_requests_in_one_sentence(kept, store_spec, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["samples", "report", "S-001", "--store", store_spec, "--output",
                                 str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "data-type='neutrophil'" in (tmp_path / "r.html").read_text()
    for args, message in ((["S-001", "--output", str(tmp_path / "r.txt")], "must end in .pdf or .html or .htm"),
                          (["S-404", "--output", str(tmp_path / "r.pdf")], "no sample 'S-404'"),
                          (["S-001", "--output", str(tmp_path / "r.pdf"), "--wbc", "-3"], "not plausible")):
        result = runner.invoke(app, ["samples", "report", *args, "--store", store_spec])
        assert result.exit_code != 0 and message in str(result.exception)  # main() prints it as one sentence
    assert not (tmp_path / "r.pdf").exists()


def test_an_implausible_concentration_is_refused(kept):
    with pytest.raises(ConfigError, match="not plausible"):
        _data(kept, wbc=5000)


def test_a_moved_box_credits_its_reviewer_and_only_a_standing_call_answers_a_referral(store, people, tmp_path):
    with store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "in", types=TYPES), "tia")
        referred = next(c for c in find(session, "S-001").cells if c.referral_reason).id
    before = _data(store).referred

    def decide_and_read(name, action, **kwargs):
        with store.session() as session:
            decide(session, "S-001", referred, action, people[name], **kwargs)
        return _data(store)

    moved = decide_and_read("sam", "move", box=(1, 1, 9, 9))
    assert (moved.reviewers, moved.decisions, moved.referred) == (["sam"], 0, before)  # a moved box is no call
    decided = decide_and_read("tia", "platelet")
    assert (decided.decisions, decided.referred) == (1, before - 1)
    undone = decide_and_read("tia", "relabel", cell_class="neutrophil", undo=True)
    assert (undone.reviewers, undone.decisions, undone.referred) == (["sam", "tia"], 0, before)


def test_a_reopened_sample_says_so_and_no_longer_claims_its_old_finish_and_sign_off(kept, people):
    with kept.session() as session:
        reopen(session, "S-001", people["sam"], "eosinophils \u2014 \u00fcnclear")
    data = _data(kept)
    assert (data.status, data.review_finished, data.signed, data.reviewers) == ("in_review", None, None, ["tia"])
    assert re.fullmatch(r"by sam, 20\d\d-\d\d-\d\d \d\d:\d\d UTC: eosinophils \u2014 \u00fcnclear", data.reopened[0])
    html = render_html(data)
    assert "<dt>Review finished</dt><dd>not yet</dd>" in html and "<dt>Signed off</dt><dd>not signed</dd>" in html
    assert "<dt>Reopened</dt><dd>by sam, " in html and "by tia" not in html


def test_a_sample_finished_without_decisions_credits_nobody_with_deciding_cells(store, people, tmp_path):
    with store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "in", types={}), "tia")  # no white cell
        finish_review(session, "S-001", people["sam"])
    data = _data(store)
    assert (data.reviewers, data.decisions, data.referred) == ([], 0, 0)
    html = render_html(data)
    assert "<dt>Cells decided by</dt><dd>nobody yet</dd>" in html and "0 cells&#x27; calls decided by a person" in html
    assert re.search(r"<dt>Review finished</dt><dd>by sam, 20\d\d-", html)


def test_the_report_of_a_sample_from_an_unfamiliar_lab_warns_before_its_differential(store, people, tmp_path):
    """The lab check's warning stands above the numbers it concerns; a familiar lab's report has none."""
    result = counted_doc(tmp_path / "odd", "S-odd", unfamiliar=True)
    with store.session() as session:
        record_count(session, store.photos, result, "tia")
        odd = render_html(report_data(session, find(session, "S-odd"), store.photos))
    warning = odd.index('id="lab-check">Lab check: 4 of 4 white cells look unlike the cells of every lab')
    assert odd.index("<h2>White-cell differential</h2>") < warning < odd.index("<table class='differential'>")
    kept_sample(store, people, tmp_path / "in")
    assert 'id="lab-check"' not in render_html(_data(store))
