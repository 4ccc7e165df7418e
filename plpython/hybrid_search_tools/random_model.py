"""Generate a BGE-M3-shaped model with random weights, for tests and benchmarks.

The real BGE-M3 is 2.2 GB and comes from the Hugging Face hub; tests need something that goes
through exactly the same loading path (``BGEM3FlagModel(path)``: AutoTokenizer + AutoModel +
``sparse_linear.pt`` + ``colbert_linear.pt``) but is small, offline and reproducible.
``size="full"`` keeps BGE-M3's exact shapes, so benchmarks pay the real compute cost; only the
weights and the (much smaller) tokenizer vocabulary are fake.

CLI: ``python -m hybrid_search_tools.random_model OUTPUT_DIR [--size tiny|full] [--seed N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import pathlib
import random
import shutil
import string
import struct
import tempfile
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MARKER = "hybrid_search_random_model.json"
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3 as in XLM-R; "<mask>" is appended last
# Letters outside the corpus still get a piece of their own instead of <unk>.
ALPHABET = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(0xC0, 0x100)]
# hidden, layers, heads, intermediate, positions, vocab (None: the tokenizer's own size).
# "full" is BGE-M3's config.json: XLM-RoBERTa-large with 8194 positions.
SIZES = {"tiny": (32, 2, 2, 64, 514, None), "full": (1024, 24, 16, 4096, 8194, 250002)}
CHUNK = 1 << 22  # floats generated at a time, so the 2.2 GB full model never sits in memory

_WORD_TEXT = """
postgres postgresql database table row column index btree gin gist brin hnsw ivfflat vector sparse
dense embedding query planner optimizer vacuum autovacuum analyze statistics checkpoint replica
replication primary standby wal segment buffer cache shared memory worker process backend catalog
extension function trigger schema tablespace sequence transaction commit rollback savepoint lock
deadlock timeout snapshot isolation serializable heap tuple page toast jsonb array text varchar
integer bigint numeric timestamp interval uuid search retrieval ranking rerank score similarity
cosine distance token tokenizer multilingual passage document corpus chunk lexical weight colbert
hybrid recall precision latency throughput benchmark batch model inference python plpython torch
error warning failure connection refused reset network socket server client driver pool session
user role grant privilege password certificate encryption backup restore archive partition shard
cluster node upgrade migration version release patch config setting parameter memory disk cpu gpu
thread parallel scan join merge hash nested loop sort aggregate window filter limit offset cursor
insert update delete upsert conflict constraint unique foreign key check default null empty value
customer order invoice product price stock warehouse shipment payment account report dashboard
fast slow large small new old first last every each many few better worse quick simple robust
when how what why where which who is are was were be been has have had do does did not no yes can
could should would will may might must to of in on at by for with from into over under about the
between through during before after above below up down out off again then once here there all a
any both some such only own same so than too very just also because while until unless although
connect create drop alter select return load store read write open close start stop run build an
compute encode decode split rank find fetch send receive parse format validate compress allocate
acquire expire retry fail succeed measure explain install configure deploy monitor debug trace
people time year day week month morning evening world country city company team family school
water money music story question answer problem solution idea example result reason change learn
house room door window street road car train plane ship river mountain forest garden market food
language english german french spanish chinese japanese korean arabic russian hindi word sentence
letter number string character symbol space line paragraph book article title summary chapter
good bad high low long short early late hard easy clear strong weak closed full free busy safe
red green blue black white bright dark warm cold hot heavy light modern ancient local global
apple banana orange bread cheese coffee tea milk sugar salt pepper rice soup salad dinner lunch
doctor teacher student engineer developer manager designer writer reader driver farmer artist
computer laptop phone keyboard screen mouse printer camera battery cable router switch sensor
cloud storage bucket object file folder directory path link address domain email message chat
video image audio photo picture sound voice signal frequency channel stream packet protocol
health science history culture nature energy power light weather rain snow wind storm summer
winter spring autumn travel hotel airport station ticket journey map guide tour holiday visit
buy sell pay spend save earn cost cheap expensive discount offer deal brand quality service
support ticket issue bug fix feature request review approve reject merge branch commit test
unit integration regression coverage pipeline build artifact container image kubernetes docker
linux windows macos kernel shell terminal command script program library package module class
method variable constant pointer reference struct union enum interface trait generic template
algorithm structure graph tree list queue stack heap map set tuple pair range slice matrix
tensor layer neuron gradient loss epoch dropout attention transformer encoder decoder pooling
average maximum minimum median total count ratio percent rate speed size length width height
"""
_WORDS = _WORD_TEXT.split()

_PHRASES = [
    "the planner chooses a {0} scan for the {1} {2}",
    "{0} {1} failed with {3} after the {2}",
    "how do I tune the {0} {1} for {2} workloads",
    "error {3}: could not {0} the {1} {2}",
    "we store a {0} {1} next to each {2}",
    "item {3} is out of {0} in the {1} {2}",
    "{0} and {1} results are merged by the {2} ranker",
    "restart the {0} if {3} appears in the log",
]


def builtin_corpus(n: int = 400) -> list[str]:
    """A fixed, varied training text: technical prose, word forms and identifiers tests search for.

    It uses its own fixed seed on purpose: the tokenizer (so every token id) is the same whatever
    weight seed is chosen, so models that differ only by seed are directly comparable. Each word
    form appears at least twice, because the Unigram trainer ignores pieces seen only once.
    """
    rng = random.Random(20240601)
    pick, num, upper = rng.choice, rng.randint, string.ascii_uppercase
    idents = ["ERR_CONN_REFUSED", "ERR_TIMEOUT", "SKU-A87-XYZ", "SQLSTATE 23505", "v1.4.2"]
    for _ in range(n // 20):
        idents += [
            f"ERR_{pick(_WORDS).upper()}_{pick(_WORDS).upper()}",
            f"SKU-{pick(upper)}{num(10, 99)}-{''.join(rng.choices(upper, k=3))}",
            f"{pick(_WORDS)}_{pick(_WORDS)}_{num(1, 999)}",
            f"0x{rng.getrandbits(32):08x}",
            f"{num(1, 9999)}.{num(0, 99)} ms",
        ]
    forms = [w + e for w in _WORDS for e in ("", "s", "ing", "ed", "er", "ly")]
    forms += [w.capitalize() for w in _WORDS] + [w.upper() for w in _WORDS]
    lines = [" ".join(idents)]
    for _ in range(2):
        rng.shuffle(forms)
        lines += [" ".join(forms[i : i + 12]) for i in range(0, len(forms), 12)]
    for _ in range(n):
        a, b, c = rng.sample(_WORDS, 3)
        s = rng.choice(_PHRASES).format(a, b, c, rng.choice(idents))
        lines.append(s[0].upper() + s[1:] + rng.choice([".", "?", "!", ";", ","]))
    return lines


def train_tokenizer(corpus: Iterable[str], model_max_length: int):
    """Train an XLM-R-style SentencePiece Unigram tokenizer and wrap it for transformers.

    The pipeline (WhitespaceSplit + Metaspace, no normalizer, ``<s> $A </s>``) is exactly what
    transformers 5 rebuilds from tokenizer.json for XLM-R, so it tokenizes the same before saving,
    after loading, and under transformers 4 (which uses tokenizer.json verbatim).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaTokenizerFast

    def pipeline(tok: Tokenizer) -> Tokenizer:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.WhitespaceSplit(),
                pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always"),
            ]
        )
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
        return tok

    draft = pipeline(Tokenizer(models.Unigram()))
    draft.train_from_iterator(
        corpus,
        trainers.UnigramTrainer(
            vocab_size=4000,
            special_tokens=SPECIALS,
            unk_token="<unk>",
            initial_alphabet=ALPHABET,
            show_progress=False,
        ),
    )
    # The trainer's float sums and its scores for characters it had to add (spaced 1e-4 apart
    # above the lowest score, in hash-map order) vary from run to run. Canonicalise: round, put
    # those characters on one score (single characters never compete for the same text), sort.
    trained = json.loads(draft.to_str())["model"]["vocab"][len(SPECIALS) :]
    floor = min(s for _, s in trained)
    band = floor + 1e-4 * sum(len(p) == 1 for p, _ in trained)
    pieces = sorted((-round(floor if len(p) == 1 and s <= band else s, 6), p) for p, s in trained)
    vocab = [(p, 0.0) for p in SPECIALS] + [(p, -s) for s, p in pieces] + [("<mask>", 0.0)]
    tok = pipeline(Tokenizer(models.Unigram(vocab, unk_id=SPECIALS.index("<unk>"))))
    tok.add_special_tokens([*SPECIALS, "<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return XLMRobertaTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length)


def write_weights(config, directory: pathlib.Path, seed: int) -> None:
    """Write model.safetensors plus the two BGE-M3 heads, streaming tensor by tensor.

    Shapes and names come from an XLMRobertaModel built on the meta device (no memory). Values
    come from one seeded generator in a fixed order, so output is byte-stable. Biases are 0,
    LayerNorms 1, embeddings normal(0, 0.02) with a zero <pad> row, except position embeddings
    (0.002: words, not positions, should dominate the features, so similar texts embed closer).
    Linear weights are LeCun-normal (std fan_in**-0.5), not transformers' 0.02, which makes the
    tiny model's [CLS] output practically input-independent (all dense vectors at cosine 1.0000).
    """
    import torch
    from transformers import XLMRobertaModel

    with torch.device("meta"):
        model = XLMRobertaModel(config)
    modules, params = dict(model.named_modules()), list(model.state_dict().items())
    gen = torch.Generator().manual_seed(seed)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t in params:
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + 4 * t.numel()],
        }
        offset += 4 * t.numel()
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(directory / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, t in params:
            module = modules[name.rpartition(".")[0]]
            if isinstance(module, torch.nn.LayerNorm) or name.endswith(".bias"):
                fill = float(isinstance(module, torch.nn.LayerNorm) and name.endswith("weight"))
                f.write(torch.full(t.shape, fill).numpy().tobytes())
                continue
            rows = max(1, CHUNK // math.prod(t.shape[1:]))
            pad = getattr(module, "padding_idx", None)
            std = t.shape[1] ** -0.5 if isinstance(module, torch.nn.Linear) else 0.02
            std /= 10 if name.endswith("position_embeddings.weight") else 1
            for start in range(0, t.shape[0], rows):
                chunk = torch.empty(min(rows, t.shape[0] - start), *t.shape[1:])
                chunk.normal_(0.0, std, generator=gen)
                if pad is not None and start <= pad < start + len(chunk):
                    chunk[pad - start] = 0.0
                f.write(chunk.numpy().tobytes())
    h = config.hidden_size
    colbert = {"weight": torch.randn(h, h, generator=gen) / h**0.5, "bias": torch.zeros(h)}
    # Token weight relu(w.h + b), h LayerNorm'd: with bias 1 and w.h of std ~0.2 practically
    # every token weighs 0.4-1.6, so any word can be matched lexically. A zero-mean head would
    # zero about half the tokens, and always the same ones, since h depends mostly on the token.
    sparse = {"weight": torch.randn(1, h, generator=gen) * (0.2 / h**0.5), "bias": torch.ones(1)}
    torch.save(colbert, directory / "colbert_linear.pt")
    torch.save(sparse, directory / "sparse_linear.pt")


def _is_complete(directory: pathlib.Path, params: dict) -> bool:
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == params  # written last, and the directory appears atomically


def generate(
    output_dir, *, size: str = "tiny", seed: int = 0, corpus: Iterable[str] | None = None
) -> pathlib.Path:
    """Create (or reuse) a random BGE-M3-shaped model in ``output_dir`` and return its path.

    Idempotent: a directory already holding a model with the same size, seed, extra corpus and
    format version is left alone. The model is built in a temporary sibling directory and renamed
    into place, so an interrupted run never leaves a half-written model behind. A non-empty
    directory that is not one of these models is never overwritten.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    out = pathlib.Path(output_dir).absolute()
    extra = [str(line) for line in corpus or ()]
    params = {
        "format_version": FORMAT_VERSION,
        "size": size,
        "seed": seed,
        "extra_corpus_sha256": hashlib.sha256(json.dumps(extra).encode()).hexdigest(),
    }
    if _is_complete(out, params):
        log.info("%s already holds a %s random model with seed %d; nothing to do", out, size, seed)
        return out
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FileExistsError(f"{out} is not empty and is not a random model; not overwriting it")
    from transformers import XLMRobertaConfig  # slow import, skipped when nothing is to be done

    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the database server may run as another user
        hidden, layers, heads, inner, positions, vocab_size = SIZES[size]
        tokenizer = train_tokenizer(builtin_corpus() + extra, positions - 2)
        config = XLMRobertaConfig(
            vocab_size=vocab_size or len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, intermediate_size=inner, max_position_embeddings=positions,
            layer_norm_eps=1e-5, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            architectures=["XLMRobertaModel"],
        )  # fmt: skip
        tokenizer.save_pretrained(tmp)
        config.save_pretrained(tmp)
        write_weights(config, tmp, seed)
        (tmp / MARKER).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        if out.exists():  # empty, or a random model made with other parameters
            shutil.rmtree(out)
        try:
            tmp.rename(out)
        except OSError:
            if not _is_complete(out, params):
                raise
            shutil.rmtree(tmp)  # a concurrent run just finished the very same model
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    took = time.monotonic() - started
    log.info("generated a %s random model (seed %d) in %s in %.1f s", size, seed, out, took)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hybrid_search_tools.random_model", description=__doc__.splitlines()[0]
    )
    parser.add_argument("output_dir", type=pathlib.Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(args.output_dir, size=args.size, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
