"""A word-level language model on a real text: the architecture of PyTorch's ``word_language_model``
example (embedding, a multi-layer RNN with dropout between layers, a linear decoder, optionally tied),
trained with truncated backpropagation through time, for DIRU, LSTM and GRU.

Data: :func:`load_corpus` reads ``train.txt``, ``valid.txt`` and ``test.txt`` of a directory (one line
per sentence or verse line, tokens separated by spaces, ``<eos>`` appended to each line, as the example
does); the default is the public-domain Shakespeare corpus shipped in
``diru_fast/experiments/data/shakespeare`` (its README states the source and licence).

Training (:func:`train_lm`): the example's loop: the corpus as ``batch_size`` parallel streams
(``[T, B]``), chunks of ``bptt`` steps, the hidden state carried (detached) across chunks, gradient
clipping by global norm, plain SGD whose lr is divided by 4 whenever validation loss does not improve
(the example's annealing), or Adam at a fixed lr. A run *diverged* when a loss became non-finite or
its last validation loss is no better than the uniform guess ``log(V)`` (where every model starts);
it *trains* when it did not diverge and its best validation loss is below the unigram model's (word
frequencies from the training split): it learned more than a frequency table knows. :func:`train_lm` can also record what
happens inside the recurrent layer (:class:`Diagnostics`): the fraction of saturated units
``|h| > 0.99``, the gradient norm of each recurrent weight block and the largest singular value of
each recurrent matrix.
"""

from __future__ import annotations

import math
import pathlib
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["CORPUS_DIR", "Corpus", "load_corpus", "batchify", "RNNModel", "LMConfig", "LMResult", "cap_sigma",
           "Diagnostics", "unigram_loss", "train_lm", "evaluate", "CELLS"]

CORPUS_DIR = pathlib.Path(__file__).resolve().parent / "data" / "shakespeare"
CELLS = ("diru", "lstm", "gru")
EOS, UNK = "<eos>", "<unk>"


@dataclass
class Corpus:
    """Token ids of the three splits (1-D LongTensors) and the vocabulary (id -> word)."""

    words: List[str]
    train: Tensor
    valid: Tensor
    test: Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.words)


def _read_tokens(path: pathlib.Path, limit: Optional[int]) -> List[str]:
    tokens: List[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            tokens.extend(line.split() + [EOS])
            if limit is not None and len(tokens) >= limit:
                return tokens[:limit]
    return tokens


def load_corpus(directory: "str | pathlib.Path" = CORPUS_DIR, max_train_tokens: Optional[int] = None,
                max_eval_tokens: Optional[int] = None) -> Corpus:
    """Read a corpus directory; the vocabulary is the training split's words (plus ``<eos>``,
    ``<unk>``); a word of validation/test missing there becomes ``<unk>``. ``max_*_tokens`` keep the
    first tokens of a split (smaller runs on a small machine)."""
    directory = pathlib.Path(directory)
    splits = {name: _read_tokens(directory / f"{name}.txt", max_train_tokens if name == "train" else max_eval_tokens)
              for name in ("train", "valid", "test")}
    words = [EOS, UNK]
    index = {EOS: 0, UNK: 1}
    for w in splits["train"]:
        if w not in index:
            index[w] = len(words)
            words.append(w)
    ids = {name: torch.tensor([index.get(w, 1) for w in toks], dtype=torch.long) for name, toks in splits.items()}
    for name, t in ids.items():
        if t.numel() < 2:
            raise ValueError(f"{directory / (name + '.txt')}: needs at least 2 tokens, has {t.numel()}")
    return Corpus(words, ids["train"], ids["valid"], ids["test"])


def batchify(data: Tensor, batch_size: int) -> Tensor:
    """``[N]`` -> ``[N // B, B]``: B parallel streams, the remainder dropped (as the example does)."""
    steps = data.numel() // batch_size
    if steps < 2:
        raise ValueError(f"{data.numel()} tokens are too few for batch size {batch_size}")
    return data[: steps * batch_size].view(batch_size, steps).t().contiguous()


def unigram_loss(corpus: Corpus, split: str = "valid") -> float:
    """Cross-entropy (nats/token) of word frequencies estimated on train (add-one smoothed) on a split."""
    counts = torch.bincount(corpus.train, minlength=corpus.vocab_size).double() + 1.0
    logp = (counts / counts.sum()).log()
    return float(-logp[getattr(corpus, split)].mean())


class RNNModel(nn.Module):
    """Embedding -> dropout -> ``cell`` RNN (``nlayers``, dropout between layers) -> dropout -> Linear.

    ``cell`` is ``"diru"`` (:class:`diru_fast.DIRULayer`), ``"lstm"`` or ``"gru"`` (``torch.nn``);
    ``tied`` shares the decoder's weight with the embedding (needs ``emsize == nhid``).
    ``forward(tokens [T, B], hidden) -> (logits [T, B, V], hidden)``."""

    def __init__(self, cell: str, ntoken: int, emsize: int = 128, nhid: int = 128, nlayers: int = 2,
                 dropout: float = 0.2, tied: bool = False, backend: str = "auto"):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        self.cell, self.nhid, self.nlayers = cell, nhid, nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, emsize)
        if cell == "diru":
            from ..modules import DIRULayer

            self.rnn = DIRULayer(emsize, nhid, nlayers, dropout=dropout, backend=backend)
        else:
            self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(emsize, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tied:
            if emsize != nhid:
                raise ValueError("tied weights need emsize == nhid")
            self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)  # the example's initialisation
        nn.init.zeros_(self.decoder.bias)
        if not tied:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def init_hidden(self, batch_size: int):
        h = self.encoder.weight.new_zeros(self.nlayers, batch_size, self.nhid)
        return (h, h.clone()) if self.cell == "lstm" else h

    def forward(self, tokens: Tensor, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        self.last_output = output.detach()  # [T, B, nhid]: read by Diagnostics
        return self.decoder(self.drop(output)), hidden


def _detach(hidden):
    return tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()


def _state(hidden) -> Tensor:
    return hidden[0] if isinstance(hidden, tuple) else hidden


@dataclass
class LMConfig:
    cell: str = "diru"
    emsize: int = 128
    nhid: int = 128
    nlayers: int = 2
    dropout: float = 0.2
    tied: bool = False
    bptt: int = 35
    batch_size: int = 20
    optimizer: str = "sgd"  # "sgd" (the example's, lr annealed /4 on a plateau) or "adam"
    lr: float = 20.0
    clip: float = 0.25  # global gradient-norm clip; 0: none
    epochs: int = 2
    seed: int = 0
    backend: str = "auto"
    max_sigma: float = 0.0  # > 0: after each step, scale DIRU's W_I and W_O down to spectral norm <= max_sigma


@torch.no_grad()
def cap_sigma(rnn: nn.Module, max_sigma: float) -> None:
    """Scale every ``weight_int_l*`` / ``weight_out_l*`` (DIRU's somatic integration and output
    projection, d x d) whose largest singular value exceeds ``max_sigma`` down to it (direction kept).
    A training-time constraint: the cell's math is unchanged."""
    for name, w in rnn.named_parameters():
        if name.startswith(("weight_int", "weight_out")):
            sigma = float(torch.linalg.matrix_norm(w, 2))
            if sigma > max_sigma:
                w.mul_(max_sigma / sigma)


@dataclass
class Diagnostics:
    """Recorded every ``every`` chunks: saturation (fraction of |h| > 0.99, top-layer outputs and every
    layer's carried state), gradient norms (before clipping: total and per recurrent block), the
    largest singular value of each recurrent matrix."""

    every: int = 20
    steps: List[int] = field(default_factory=list)
    loss: List[float] = field(default_factory=list)
    saturated: List[float] = field(default_factory=list)
    grad_norm: List[float] = field(default_factory=list)
    block_grad: List[Dict[str, float]] = field(default_factory=list)
    sigma_max: List[Dict[str, float]] = field(default_factory=list)


def _recurrent_blocks(model: RNNModel) -> Dict[str, Tensor]:
    """Name -> recurrent weight matrix (views): DIRU's five h-products per layer (W_h, the gate's
    and the global gate's h-columns, W_I, W_O); LSTM/GRU's weight_hh per gate."""
    blocks: Dict[str, Tensor] = {}
    d = model.nhid
    for layer in range(model.nlayers):
        hh = getattr(model.rnn, f"weight_hh_l{layer}")
        if model.cell == "diru":
            for i, name in enumerate(("W_h", "G_h", "W_G_h")):
                blocks[f"l{layer}.{name}"] = hh[i * d:(i + 1) * d]
            blocks[f"l{layer}.W_I"] = getattr(model.rnn, f"weight_int_l{layer}")
            blocks[f"l{layer}.W_O"] = getattr(model.rnn, f"weight_out_l{layer}")
        else:
            gates = ("i", "f", "g", "o") if model.cell == "lstm" else ("r", "z", "n")
            for i, name in enumerate(gates):
                blocks[f"l{layer}.hh_{name}"] = hh[i * d:(i + 1) * d]
    return blocks


def _block_grads(model: RNNModel) -> Dict[str, float]:
    d = model.nhid
    out: Dict[str, float] = {}
    for layer in range(model.nlayers):
        g = getattr(model.rnn, f"weight_hh_l{layer}").grad
        names = (("W_h", "G_h", "W_G_h") if model.cell == "diru" else
                 tuple(f"hh_{n}" for n in (("i", "f", "g", "o") if model.cell == "lstm" else ("r", "z", "n"))))
        for i, name in enumerate(names):
            out[f"l{layer}.{name}"] = float(g[i * d:(i + 1) * d].norm()) if g is not None else 0.0
        if model.cell == "diru":
            for role, name in (("weight_int", "W_I"), ("weight_out", "W_O")):
                g = getattr(model.rnn, f"{role}_l{layer}").grad
                out[f"l{layer}.{name}"] = float(g.norm()) if g is not None else 0.0
    return out


@torch.no_grad()
def evaluate(model: RNNModel, data: Tensor, bptt: int, batch_size: int = 10) -> float:
    """Mean cross-entropy (nats/token) over a split, streamed as the example does (eval batch 10)."""
    model.eval()
    source = batchify(data, batch_size)
    hidden = model.init_hidden(batch_size)
    total, count = 0.0, 0
    for i in range(0, source.size(0) - 1, bptt):
        seq = min(bptt, source.size(0) - 1 - i)
        logits, hidden = model(source[i:i + seq], hidden)
        total += float(nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                   source[i + 1:i + 1 + seq].reshape(-1), reduction="sum"))
        count += seq * batch_size
    return total / count


@dataclass
class LMResult:
    config: dict
    unigram_valid: float
    valid_loss: List[float]  # per epoch (nats/token); inf after a non-finite training loss
    train_loss: List[float]
    epoch_seconds: List[float]
    best_valid: float
    test_at_best: float  # test loss of the best-validation epoch's weights
    diverged: bool  # a non-finite loss, or the last validation loss no better than the uniform guess log(V)
    trains: bool  # not diverged, and the best validation loss below the unigram model's
    parameters: int
    diagnostics: Optional[dict] = None

    @property
    def test_ppl(self) -> float:
        return math.exp(min(self.test_at_best, 50.0))

    @property
    def best_valid_ppl(self) -> float:
        return math.exp(min(self.best_valid, 50.0))


def train_lm(cfg: LMConfig, corpus: Corpus, diagnostics: Optional[Diagnostics] = None,
             log=None) -> LMResult:
    """Train one model (see the module docstring); ``log(str)`` gets one line per epoch."""
    torch.manual_seed(cfg.seed)
    model = RNNModel(cfg.cell, corpus.vocab_size, cfg.emsize, cfg.nhid, cfg.nlayers, cfg.dropout, cfg.tied,
                     cfg.backend)
    params = [p for p in model.parameters()]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
    train = batchify(corpus.train, cfg.batch_size)  # [N, B]
    unigram = unigram_loss(corpus)
    valid_curve: List[float] = []
    train_curve: List[float] = []
    seconds: List[float] = []
    best, best_state = math.inf, None
    diverged = False
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        hidden = model.init_hidden(cfg.batch_size)
        start = time.perf_counter()
        total, count = 0.0, 0
        for i in range(0, train.size(0) - 1, cfg.bptt):
            seq = min(cfg.bptt, train.size(0) - 1 - i)
            hidden = _detach(hidden)
            opt.zero_grad(set_to_none=True)
            logits, hidden = model(train[i:i + seq], hidden)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), train[i + 1:i + 1 + seq].reshape(-1))
            value = float(loss.detach())
            if not math.isfinite(value):
                diverged = True
                break
            loss.backward()
            record = diagnostics is not None and step % diagnostics.every == 0
            if record:
                diagnostics.block_grad.append(_block_grads(model))
            norm = float(nn.utils.clip_grad_norm_(params, cfg.clip if cfg.clip > 0 else math.inf))
            opt.step()
            if cfg.max_sigma > 0 and cfg.cell == "diru":
                cap_sigma(model.rnn, cfg.max_sigma)
            if record:
                h = torch.cat([model.last_output.reshape(-1), _state(hidden).detach().reshape(-1)])
                diagnostics.steps.append(step)
                diagnostics.loss.append(value)
                diagnostics.grad_norm.append(norm)
                diagnostics.saturated.append(float((h.abs() > 0.99).double().mean()))
                with torch.no_grad():
                    diagnostics.sigma_max.append({k: float(torch.linalg.matrix_norm(w, 2))
                                                  for k, w in _recurrent_blocks(model).items()})
            total += value * seq
            count += seq
            step += 1
        seconds.append(time.perf_counter() - start)
        if diverged:
            train_curve.append(math.inf)
            valid_curve.append(math.inf)
            break
        train_curve.append(total / max(count, 1))
        val = evaluate(model, corpus.valid, cfg.bptt)
        if not math.isfinite(val):
            diverged = True
            valid_curve.append(math.inf)
            break
        valid_curve.append(val)
        if log is not None:
            log(f"  {cfg.cell} {cfg.optimizer} lr={cfg.lr:g} seed={cfg.seed} epoch {epoch + 1}: train {train_curve[-1]:.3f} "
                f"valid {val:.3f} (ppl {math.exp(min(val, 50)):.1f}) {seconds[-1]:.1f}s")
        if val < best:
            best = val
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif cfg.optimizer == "sgd":
            for g in opt.param_groups:
                g["lr"] /= 4.0
    test = math.inf
    if best_state is not None:
        model.load_state_dict(best_state)
        test = evaluate(model, corpus.test, cfg.bptt)
    uniform = math.log(corpus.vocab_size)
    diverged = diverged or not valid_curve[-1] < uniform
    trains = not diverged and best < unigram
    return LMResult(asdict(cfg), unigram, valid_curve, train_curve, seconds, best, test, diverged, trains,
                    sum(p.numel() for p in model.parameters()),
                    asdict(diagnostics) if diagnostics is not None else None)
