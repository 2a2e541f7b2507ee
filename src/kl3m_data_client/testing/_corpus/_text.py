"""Generated legal text (sentences, citations, titles, rendered originals) and the tokenizer."""

from __future__ import annotations

import functools
import html
import random
import threading
from typing import Any

_WORDS_TEXT = (
    "the court shall any person who under color of statute ordinance regulation custom or "
    "usage of state territory subjects causes to be subjected citizen United States other "
    "within jurisdiction thereof deprivation rights privileges immunities secured by "
    "Constitution and laws liable party injured in action at law suit equity proper "
    "proceeding for redress except that brought against judicial officer act omission taken "
    "such officer's capacity injunctive relief not granted unless declaratory decree was "
    "violated unavailable purposes this section Act Congress applicable exclusively District "
    "Columbia considered be Secretary may prescribe regulations necessary carry out "
    "provisions title subsection paragraph subparagraph clause notwithstanding provided "
    "further amount appropriated fiscal year agency head department report committees "
    "House Representatives Senate plaintiff defendant appellant appellee petitioner "
    "respondent judgment affirmed reversed remanded opinion dissenting concurring motion "
    "dismiss summary jurisdiction venue contract tort negligence damages reasonable "
    "standard review de novo abuse discretion evidence record finding fact conclusion "
    "Federal Register Code Regulations rule notice comment effective date amendment "
    "compliance enforcement penalty civil criminal violation each day continuing "
    "application permit license fee schedule hearing administrative judge appeal board "
    "public private entity corporation partnership trust estate beneficiary property "
    "interest tax income credit deduction return filing period employer employee wage "
    "benefit plan insurance coverage health safety environmental protection water air "
    "emissions standard program grant assistance eligible recipient State local tribal"
)
WORDS = tuple(_WORDS_TEXT.split())
_NAMES_TEXT = (
    "Smith Jones Garcia Miller Davis Rodríguez Martínez Hernández López Wilson Anderson "
    "Thomas Taylor Moore Jackson Martin Lee Pérez Thompson White Harris Sánchez Clark "
    "Ramírez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyễn Hill Flores "
    "Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts O'Brien Müller"
)
NAMES = tuple(_NAMES_TEXT.split())
ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII")
HOSTS = (
    "www.uscourts.gov",
    "purl.fdlp.gov",
    "www.gpo.gov",
    "www.justice.gov",
    "www.ftc.gov",
    "www.sec.gov",
    "www.epa.gov",
    "acl.gov",
)


def _citation(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return f"{rng.randint(1, 54)} U.S.C. § {rng.randint(1, 9999)}"
    if kind == 1:
        return f"{rng.randint(1, 50)} C.F.R. § {rng.randint(1, 999)}.{rng.randint(1, 99)}"
    if kind == 2:
        return (
            f"{rng.choice(NAMES)} v. {rng.choice(NAMES)}, {rng.randint(1, 999)} F.3d "
            f"{rng.randint(1, 1500)} ({rng.randint(1, 11)}th Cir. {rng.randint(1990, 2024)})"
        )
    if kind == 3:
        return f"Pub. L. No. {rng.randint(90, 118)}–{rng.randint(1, 400)}"
    if kind == 4:
        return f"{rng.randint(1, 600)} U.S. {rng.randint(1, 999)} ({rng.randint(1850, 2024)})"
    if kind == 5:
        return "42 U.S.C. § 1983"
    return f"{rng.randint(1, 90)} Fed. Reg. {rng.randint(1, 99999)}"


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 24))
    if rng.random() < 0.35:
        words.insert(rng.randrange(len(words)), f"({_citation(rng)})")
    if rng.random() < 0.1:
        words.insert(rng.randrange(len(words)), f"“{rng.choice(WORDS)} {rng.choice(WORDS)}”")
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice((".", ".", ".", ";", ":"))


def _paragraph(rng: random.Random) -> str:
    marker = ""
    if rng.random() < 0.5:
        marker = f"({chr(ord('a') + rng.randrange(8))}) "
    return marker + " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))


def heading_words(rng: random.Random, n: int) -> str:
    return " ".join(w[0].upper() + w[1:] for w in rng.choices(WORDS, k=n))


@functools.lru_cache(maxsize=16)
def paragraph_pool(seed: int) -> tuple[str, ...]:
    rng = random.Random(f"kl3m-pool:{seed}")
    return tuple(_paragraph(rng) for _ in range(300))


# --------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------

_TOKENIZER_LOCK = threading.Lock()
_TOKENIZER: list[Any] = []


def corpus_tokenizer() -> Any:
    """The byte-level BPE ``tokenizers.Tokenizer`` whose ids the corpus carries.

    Trained once per process on generated legal text (no network, deterministic); requires the
    ``local`` extra (``tokenizers``). ``corpus_tokenizer().decode(doc.tokens) == doc.text``.
    """
    with _TOKENIZER_LOCK:
        if not _TOKENIZER:
            _TOKENIZER.append(_train_tokenizer())
        return _TOKENIZER[0]


def _train_tokenizer() -> Any:
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "kl3m_data_client.testing needs the 'local' extra: "
            "pip install 'kl3m-data-client[local]'"
        ) from exc

    rng = random.Random("kl3m-tokenizer")
    training = list(paragraph_pool(-1))
    training += [_citation(rng) for _ in range(2000)]
    training += [f"§ {rng.randint(1, 9999)}. {heading_words(rng, 4)}" for _ in range(500)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training, trainer=trainer)
    return tokenizer


def make_title(dataset_id: str, rng: random.Random, i: int) -> str:
    if dataset_id == "cap":
        return (
            f"{rng.choice(NAMES)} v. {rng.choice(NAMES)}, {rng.randint(1, 600)} U.S. "
            f"{rng.randint(1, 999)} ({rng.randint(1850, 2024)})"
        )
    if dataset_id == "ecfr":
        return f"§ {rng.randint(1, 999)}.{i} {heading_words(rng, 3)}."
    if dataset_id == "dotgov":
        return f"{heading_words(rng, 4)} | {rng.choice(HOSTS)}"
    return f"§ {rng.randint(1, 9999)}. {heading_words(rng, rng.randint(2, 5))}"


def text_blocks(rng: random.Random, pool: tuple[str, ...], target: int) -> list[tuple[str, str]]:
    """(kind, text) blocks whose markdown rendering is about ``target`` characters."""
    blocks: list[tuple[str, str]] = []
    size = 0
    n_heading = 0
    while size < target:
        if rng.random() < 0.12:
            n_heading += 1
            text = f"({n_heading}) {heading_words(rng, rng.randint(2, 6))}"
            kind = "h2"
        else:
            text = pool[rng.randrange(len(pool))]
            kind = "p"
        blocks.append((kind, text))
        size += len(text) + 5
    return blocks


def render(
    mime: str, title: str, blocks: list[tuple[str, str]], rng: random.Random, target: int
) -> tuple[bytes, str]:
    """(raw original bytes, extracted text) for one document."""
    if mime == "text/plain":
        text = title + "\n\n" + "\n\n".join(t for _, t in blocks) + "\n"
        return text.encode("utf-8"), text
    markdown = (
        f"# {title}\n\n"
        + "\n\n".join(f"## {t}" if kind == "h2" else t for kind, t in blocks)
        + "\n"
    )
    if mime == "application/pdf":
        # Binary original (never valid UTF-8); the representation holds the "extracted" text.
        header = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
        stream = rng.randbytes(max(256, target - 200))
        pdf = (
            header
            + b"2 0 obj\n<< /Filter /FlateDecode >>\nstream\n"
            + stream
            + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
        )
        return pdf, markdown
    body = "\n".join(
        f"<h2>{html.escape(t)}</h2>" if kind == "h2" else f"<p>{html.escape(t)}</p>"
        for kind, t in blocks
    )
    if mime == "application/xhtml+xml":
        doc = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
            '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n'
            '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>'
            f"{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"{body}\n</body></html>\n"
        )
    else:
        doc = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/><title>'
            f"{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"{body}\n</body></html>\n"
        )
    return doc.encode("utf-8"), markdown
