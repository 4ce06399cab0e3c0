"""What a reader of the decision PDF must see, in Kazakh and in Russian.

The PDF is read back with pypdf, as an applicant, an auditor or a court would copy it.
pypdf breaks lines where the layout does, so texts are compared whitespace-normalised.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from pypdf import PdfReader

from activities.documents import (
    DocumentContext,
    DocumentRenderer,
    IncompleteDecisionError,
    content_digest,
    qr_svg_data_uri,
    verification_code_for,
    write_pdf,
)
from casework.contracts import (
    DecisionOutcome,
    DecisionRequest,
    DurationUnit,
    GroundRef,
    HearingRecord,
    Term,
)
from casework.regions import Region

NUMBER = "WP-D-2026-000042"
ISSUED_AT = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)  # 12:00 in Kazakhstan

AUTHORITY_KK = "Павлодар облысының жұмыспен қамтуды үйлестіру басқармасы"
AUTHORITY_RU = "Управление координации занятости Павлодарской области"
TITLE_KK = "Жұмыс берушіге шетелдік жұмыс күшін тартуға рұқсат беру"
TITLE_RU = "Выдача разрешения работодателю на привлечение иностранной рабочей силы"
APPEAL_KK = (
    "Шешімге қызмет берушінің басшысына шағым беруге болады (5 жұмыс күнінде қаралады), "
    "одан кейін мемлекеттік қызмет көрсету сапасын бағалау жөніндегі уәкілетті органға, "
    "одан кейін сотқа."
)
APPEAL_RU = (
    "Решение может быть обжаловано руководителю услугодателя (рассматривается в течение "
    "5 рабочих дней), затем в уполномоченный орган по оценке качества оказания "
    "государственных услуг, затем в суд."
)

LOCAL_CONTENT = GroundRef(
    code="local_content_unmet",
    rule_ref="Приказ МТСЗН РК № 279 от 30.06.2023 (ред. приказа № 93), подп. 4)",
    text_kk="Кадрлардағы жергілікті қамту шарттары сақталмады",
    text_ru="Не соблюдены условия по местному содержанию в кадрах",
)
QUALIFICATION = GroundRef(
    code="qualification_below_standard",
    rule_ref="Приказ МТСЗН РК № 279 от 30.06.2023 (ред. приказа № 93), подп. 6)",
    text_kk="Білімі немесе жұмыс тәжірибесі біліктілік талаптарына сәйкес келмейді",
    text_ru="Образование или опыт работы не соответствуют квалификационным требованиям",
)
OBJECTION = "Не согласны: два гражданина РК приняты 01.03.2026, приказы приложены."


def decision(outcome: DecisionOutcome, **changes: Any) -> DecisionRequest:
    base = DecisionRequest(
        idempotency_key=f"WP-2026-000017:{outcome.value}",
        case_id="WP-2026-000017",
        procedure="work_permit",
        ruleset_version="2026.01",
        outcome=outcome,
        decided_at=datetime(2026, 3, 12, 6, 30, tzinfo=UTC),
        decided_by="А. Сейтқалиева",
        region=Region.pavlodar,
        applicant_name="ТОО «Павлодар Құрылыс»",
        applicant_id="123456789012",
        subject={
            "Шетелдік қызметкер / Иностранный работник": "LI WEI",
            "Паспорт / Паспорт": "E12345678",
            "Санат / Категория": "3",
            "Лауазымы / Должность": "Инженер-технолог",
        },
    )
    return base.model_copy(update=changes)


def granted() -> DecisionRequest:
    return decision(
        DecisionOutcome.granted,
        valid_from=date(2026, 4, 1),
        valid_to=date(2027, 3, 31),
        permit_number="KZ-WP-2026-PAV-000117",
        fee_kzt=1_081_250,
    )


def refused(objection: str | None = OBJECTION) -> DecisionRequest:
    return decision(
        DecisionOutcome.refused,
        grounds=[LOCAL_CONTENT, QUALIFICATION],
        reasoning="Доля граждан РК среди специалистов 82 %, ниже требуемых 90 %.",
        hearing=HearingRecord(
            notified_at=datetime(2026, 3, 5, 5, 0, tzinfo=UTC),
            objection_deadline=datetime(2026, 3, 10, 13, 0, tzinfo=UTC),
            intended_grounds=[LOCAL_CONTENT, QUALIFICATION],
            objection_text=objection,
            objection_received_at=datetime(2026, 3, 6, 9, 0, tzinfo=UTC) if objection else None,
            reviewed_by="Б. Жұмабеков",
            reviewed_at=datetime(2026, 3, 11, 8, 0, tzinfo=UTC),
        ),
        appeal_term=Term(amount=90, unit=DurationUnit.calendar_days),
    )


def lapsed() -> DecisionRequest:
    return decision(DecisionOutcome.lapsed, fee_kzt=1_081_250)


def context(
    req: DecisionRequest, appeal_deadline: date | None = None, issued_at: datetime = ISSUED_AT
) -> DocumentContext:
    code = verification_code_for(NUMBER, content_digest(req, NUMBER, issued_at))
    return DocumentContext(
        request=req,
        number=NUMBER,
        issued_at=issued_at,
        verification_code=code,
        verify_url=f"https://casework.example.kz/verify/{NUMBER}?code={code}",
        procedure_title_kk=TITLE_KK,
        procedure_title_ru=TITLE_RU,
        authority_kk=AUTHORITY_KK,
        authority_ru=AUTHORITY_RU,
        appeal_route_kk=APPEAL_KK,
        appeal_route_ru=APPEAL_RU,
        appeal_deadline=appeal_deadline,
    )


def flat(text: str) -> str:
    return " ".join(text.split())


def pdf_text(pdf: bytes) -> str:
    return flat("\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages))


@pytest.fixture(scope="module")
def renderer() -> DocumentRenderer:
    return DocumentRenderer()


@pytest.fixture(scope="module")
def granted_ctx() -> DocumentContext:
    return context(granted())


@pytest.fixture(scope="module")
def refused_ctx() -> DocumentContext:
    return context(refused(), appeal_deadline=date(2026, 6, 10))


@pytest.fixture(scope="module")
def lapsed_ctx() -> DocumentContext:
    return context(lapsed(), appeal_deadline=date(2026, 6, 10))


@pytest.fixture(scope="module")
def pdfs(
    renderer: DocumentRenderer,
    granted_ctx: DocumentContext,
    refused_ctx: DocumentContext,
    lapsed_ctx: DocumentContext,
) -> dict[str, bytes]:
    # Rendering takes most of the test time: each outcome is rendered once per module.
    return {
        "granted": renderer.render_pdf(granted_ctx),
        "refused": renderer.render_pdf(refused_ctx),
        "lapsed": renderer.render_pdf(lapsed_ctx),
    }


# --------------------------------------------------------------------------- per outcome


def test_grant_pdf_shows_permit_number_validity_and_fee_in_both_languages(
    pdfs: dict[str, bytes],
) -> None:
    text = pdf_text(pdfs["granted"])

    assert "Рұқсат берілді" in text
    assert "Разрешение выдано" in text
    assert text.count("KZ-WP-2026-PAV-000117") == 2
    assert "Рұқсаттың нөмірі KZ-WP-2026-PAV-000117" in text
    assert "Номер разрешения KZ-WP-2026-PAV-000117" in text
    assert "01.04.2026 бастап 31.03.2027 дейін" in text
    assert "с 01.04.2026 по 31.03.2027" in text
    assert "1 081 250 теңге" in text
    assert "1 081 250 тенге" in text
    # A grant is not a refusal: nothing on it may read like one.
    assert "Основания для отказа" not in text
    assert "Бас тарту негіздері" not in text


def test_refusal_pdf_states_grounds_hearing_and_appeal_in_both_languages(
    pdfs: dict[str, bytes],
) -> None:
    text = pdf_text(pdfs["refused"])

    assert "Бас тарту туралы шешім" in text
    assert "Решение об отказе" in text
    for ground in (LOCAL_CONTENT, QUALIFICATION):
        assert flat(ground.text_kk) in text
        assert flat(ground.text_ru) in text
        assert text.count(flat(ground.rule_ref)) == 2, "each language cites the rule"
    assert "Доля граждан РК среди специалистов 82 %, ниже требуемых 90 %." in text

    # Hearing record: notice, deadline, the objection itself, who reviewed it and when
    # (times in Kazakhstan time, UTC+5).
    assert "Тыңдау хаттамасы" in text
    assert "Сведения о заслушивании" in text
    assert "05.03.2026 10:00" in text
    assert "10.03.2026 18:00" in text
    assert text.count(flat(OBJECTION)) == 2
    assert "Б. Жұмабеков, 11.03.2026 13:00" in text

    assert flat(APPEAL_KK) in text
    assert flat(APPEAL_RU) in text
    assert "Шағымдану мерзімі: 10.06.2026 дейін" in text
    assert "Срок обжалования: до 10.06.2026" in text


def test_refusal_without_objection_says_none_was_received_in_both_languages(
    renderer: DocumentRenderer,
) -> None:
    ctx = context(refused(objection=None), appeal_deadline=date(2026, 6, 10))

    text = pdf_text(renderer.render_pdf(ctx))

    assert "Белгіленген мерзімде қарсылық түскен жоқ" in text
    assert "В установленный срок возражение не поступило" in text


def test_lapse_pdf_says_fee_not_paid_and_quota_unit_returns_in_both_languages(
    pdfs: dict[str, bytes],
) -> None:
    text = pdf_text(pdfs["lapsed"])

    assert "Өтініш қараусыз қалдырылды" in text
    assert "Заявление оставлено без рассмотрения" in text
    assert "алым белгіленген мерзімде төленбеді" in text
    assert "Сбор за выдачу разрешения не оплачен в установленный срок" in text
    assert "Квота бірлігі өңірдің квотасына қайтарылады." in text
    assert "Единица квоты возвращается в квоту региона." in text
    assert "Срок обжалования: до 10.06.2026" in text


def test_refusal_without_grounds_is_never_issued(renderer: DocumentRenderer) -> None:
    ctx = context(refused().model_copy(update={"grounds": []}), appeal_deadline=date(2026, 6, 10))

    with pytest.raises(IncompleteDecisionError, match="grounds"):
        renderer.render_html(ctx)


# --------------------------------------------------------------------------- every decision


@pytest.mark.parametrize("outcome", ["granted", "refused", "lapsed"])
def test_every_decision_pdf_names_authority_region_procedure_ruleset_case_and_applicant(
    pdfs: dict[str, bytes], outcome: str
) -> None:
    text = pdf_text(pdfs[outcome])

    assert "ШЕШІМ № WP-D-2026-000042" in text
    assert "РЕШЕНИЕ № WP-D-2026-000042" in text
    assert "Шешім күні 12.03.2026" in text
    assert "Дата решения 12.03.2026" in text
    for expected in (AUTHORITY_KK, AUTHORITY_RU, TITLE_KK, TITLE_RU):
        assert expected in text
    assert "Павлодар облысы" in text
    assert "Павлодарская область" in text
    assert "Қағидалар нұсқасы 2026.01" in text
    assert "Версия правил 2026.01" in text
    assert "Іс нөмірі WP-2026-000017" in text
    assert "Номер дела WP-2026-000017" in text
    assert text.count("ТОО «Павлодар Құрылыс»") == 2
    assert "БСН / ЖСН 123456789012" in text
    assert "БИН / ИИН 123456789012" in text
    # Subject lines: each section shows its half of a "kk / ru" label.
    assert "Шетелдік қызметкер LI WEI" in text
    assert "Иностранный работник LI WEI" in text
    assert "Лауазымы Инженер-технолог" in text
    assert "Должность Инженер-технолог" in text


@pytest.mark.parametrize("outcome", ["granted", "refused", "lapsed"])
def test_every_decision_pdf_carries_its_verification_code_and_link(
    renderer: DocumentRenderer,
    pdfs: dict[str, bytes],
    outcome: str,
    request: pytest.FixtureRequest,
) -> None:
    ctx: DocumentContext = request.getfixturevalue(f"{outcome}_ctx")

    text = pdf_text(pdfs[outcome])

    assert f"Тексеру коды / Код проверки: {ctx.verification_code}" in text
    assert ctx.verify_url in text
    # The QR code encodes the link, not some other value.
    html = renderer.render_html(ctx)
    assert qr_svg_data_uri(ctx.verify_url) in html
    assert qr_svg_data_uri(ctx.verify_url + "x") not in html


def test_pdf_uses_only_dejavu_sans_regular_and_bold(pdfs: dict[str, bytes]) -> None:
    # Each embedded face costs render time; Kazakh and Russian need nothing else.
    fonts: set[str] = set()
    for pdf in pdfs.values():
        for page in PdfReader(io.BytesIO(pdf)).pages:
            for font in page["/Resources"]["/Font"].values():
                fonts.add(str(font.get_object()["/BaseFont"]).split("+", 1)[-1])

    assert fonts == {"DejaVu-Sans", "DejaVu-Sans-Bold"}


def test_decision_date_is_the_date_in_kazakhstan(renderer: DocumentRenderer) -> None:
    late_evening_utc = datetime(2026, 3, 12, 20, 30, tzinfo=UTC)  # 01:30 on 13 March in Astana

    html = renderer.render_html(context(granted(), issued_at=late_evening_utc))

    assert "13.03.2026" in html
    assert "12.03.2026" not in html.split("<section")[1].split("</table>")[0]


# --------------------------------------------------------------------------- applicant text


def test_applicant_text_is_printed_literally_never_as_markup(renderer: DocumentRenderer) -> None:
    evil = "<b>Evil</b> & Co"
    req = refused(objection='<script>alert("x")</script> <i>we object</i>').model_copy(
        update={"applicant_name": evil, "reasoning": "<h1>Refused</h1>"}
    )
    ctx = context(req, appeal_deadline=date(2026, 6, 10))

    html = renderer.render_html(ctx)
    text = pdf_text(renderer.render_pdf(ctx))

    assert "<b>Evil" not in html
    assert "<script>" not in html
    assert "&lt;b&gt;Evil&lt;/b&gt; &amp; Co" in html
    assert text.count(evil) == 2
    assert text.count('<script>alert("x")</script> <i>we object</i>') == 2
    assert text.count("<h1>Refused</h1>") == 2


# --------------------------------------------------------------------------- verification code


def test_verification_code_is_deterministic_and_follows_the_content() -> None:
    req = refused()
    digest = content_digest(req, NUMBER, ISSUED_AT)
    code = verification_code_for(NUMBER, digest)

    assert code == verification_code_for(NUMBER, content_digest(refused(), NUMBER, ISSUED_AT))
    assert len(code) == 19
    assert [len(group) for group in code.split("-")] == [4, 4, 4, 4]
    assert all(c in "0123456789ABCDEF-" for c in code)

    # The same instant written in another time zone is the same content.
    in_astana = ISSUED_AT.astimezone(timezone(timedelta(hours=5)))
    assert content_digest(req, NUMBER, in_astana) == digest

    changed = [
        content_digest(req.model_copy(update={"reasoning": "другое"}), NUMBER, ISSUED_AT),
        content_digest(req.model_copy(update={"grounds": [LOCAL_CONTENT]}), NUMBER, ISSUED_AT),
        content_digest(
            req.model_copy(update={"applicant_name": "ТОО «Другое»"}), NUMBER, ISSUED_AT
        ),
        content_digest(req, "WP-D-2026-000043", ISSUED_AT),
        content_digest(req, NUMBER, datetime(2026, 3, 13, 7, 0, tzinfo=UTC)),
    ]
    assert digest not in changed
    assert len(set(changed)) == len(changed)
    assert code not in {verification_code_for(NUMBER, d) for d in changed}
    assert verification_code_for("WP-D-2026-000043", digest) != code


def test_verification_code_ignores_the_idempotency_key() -> None:
    req = refused()

    assert content_digest(req, NUMBER, ISSUED_AT) == content_digest(
        req.model_copy(update={"idempotency_key": "retry-2"}), NUMBER, ISSUED_AT
    )


def page_streams(pdf: bytes) -> list[bytes]:
    return [page.get_contents().get_data() for page in PdfReader(io.BytesIO(pdf)).pages]


def test_the_pdf_is_laid_out_by_the_decision_stylesheet_as_the_html_links_it(
    renderer: DocumentRenderer, refused_ctx: DocumentContext
) -> None:
    # The PDF path applies the stylesheet parsed once per process instead of the HTML's link.
    linked = write_pdf(renderer.render_html(refused_ctx), str(renderer.template_dir))
    unstyled = write_pdf(
        renderer.render_html(refused_ctx).replace('href="decision.css"', 'href="none.css"'),
        str(renderer.template_dir),
    )
    assert page_streams(renderer.render_pdf(refused_ctx)) == page_streams(linked)
    assert page_streams(linked) != page_streams(unstyled)
