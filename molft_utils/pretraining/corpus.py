"""Pre-training corpus for the embedded backbone: MOSES (ZINC Clean Leads), augmented.

The MOSES training set (Polykovskiy et al., 2020; 1,584,663 SMILES, MIT licence) ships inside the
PyPI wheel ``molsets==0.3.1``. :func:`fetch_moses` downloads that wheel with ``pip download``
(no install, no dependencies), extracts ``moses/dataset/data/train.csv.gz`` and checks its hash.

MOSES was filtered to neutral molecules without stereochemistry and with only C, N, O, S, F, Cl,
Br and H, so a model pretrained on it never sees ``[C@@H]``, ``[N+]``, ``[O-]``, ``/`` or ``\\``,
which Lipophilicity uses often. :func:`augment` therefore rewrites a fraction of the molecules with
RDKit, each edit producing a valid molecule:

* random stereochemistry for unassigned stereocentres and double bonds;
* ionisation as at pH 7.4 (carboxylic acids to carboxylates, basic aliphatic amines protonated);
* charge-separated groups: aromatic amines to nitro groups, sulfoxides as ``[S+]([O-])``,
  pyridine-type nitrogens to N-oxides;
* bromine to iodine (the heavier halogen MOSES excludes);
* ring-closure labels renamed to higher ones (``7``, ``8``, ``9``, ``%10``...), which SMILES allows.

Run ``python -m molft_utils.pretraining.corpus --help`` for the command line.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import random
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from multiprocessing import Pool
from pathlib import Path

from rdkit import Chem, RDLogger
from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions

from molft_utils.models.tokenizer import split_smiles

__all__ = ["MOSES_SHA256", "MOSES_WHEEL", "augment", "fetch_moses", "prepare_corpus"]

log = logging.getLogger(__name__)

MOSES_WHEEL = "molsets==0.3.1"
MOSES_MEMBER = "moses/dataset/data/train.csv.gz"
#: sha256 of ``train.csv.gz`` inside the ``molsets==0.3.1`` wheel.
MOSES_SHA256 = "786f0313aa6b9ba5514df685f885742a70ea8d86f1a4fa48115f7f80a634265c"

_ACID_O = Chem.MolFromSmarts("[CX3](=O)[OX2H1]")
_BASIC_N = Chem.MolFromSmarts(
    "[NX3;!$(N[a]);!$(N[#6,#16]=[#7,#8,#16]);!$(N[#7,#8]);!$(N[CX2]#[NX1]);!$(N-[SX4](=O)=O)]"
)
_ANILINE_N = Chem.MolFromSmarts("[NX3;H2][c]")
_SULFOXIDE = Chem.MolFromSmarts("[SX3](=[OX1])([#6])[#6]")
_PYRIDINE_N = Chem.MolFromSmarts("[nX2;r6]")


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_moses(dest: Path) -> Path:
    """Download the ``molsets`` wheel with pip and extract the MOSES training set into ``dest``.

    Returns the path of ``train.csv.gz``; does nothing if it is already there.
    """
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "moses_train.csv.gz"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, MOSES_WHEEL]
        log.info("running %s", " ".join(cmd))
        subprocess.run(cmd, check=True)
        (wheel,) = Path(tmp).glob("molsets-*.whl")
        with zipfile.ZipFile(wheel) as zf, zf.open(MOSES_MEMBER) as src:
            target.write_bytes(src.read())
    return target


def read_moses(path: Path) -> list[str]:
    """Read the SMILES column of the MOSES csv.gz (header ``SMILES``)."""
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip()
        if header != "SMILES":
            raise ValueError(f"{path}: expected header 'SMILES', found {header!r}")
        return [line.strip() for line in fh if line.strip()]


# ---------------------------------------------------------------------------------------------
# augmentation: each edit takes (mol, rng) and returns a new mol or None when it does not apply


def _random_stereo(mol: Chem.Mol, rng: random.Random) -> Chem.Mol | None:
    opts = StereoEnumerationOptions(onlyUnassigned=True, maxIsomers=1, rand=rng.randint(0, 2**31 - 1))
    isomers = list(EnumerateStereoisomers(mol, options=opts))
    return isomers[0] if isomers else None


def _ionise(mol: Chem.Mol, rng: random.Random) -> Chem.Mol | None:
    rw = Chem.RWMol(mol)
    changed = False
    for _, _, o_idx in rw.GetSubstructMatches(_ACID_O):
        atom = rw.GetAtomWithIdx(o_idx)
        atom.SetFormalCharge(-1)
        atom.SetNumExplicitHs(0)
        atom.SetNoImplicit(True)
        changed = True
    for (n_idx,) in rw.GetSubstructMatches(_BASIC_N):
        atom = rw.GetAtomWithIdx(n_idx)
        if atom.GetIsAromatic() or rng.random() < 0.5:
            continue
        atom.SetNumExplicitHs(atom.GetTotalNumHs() + 1)
        atom.SetFormalCharge(1)
        atom.SetNoImplicit(True)
        changed = True
    return rw.GetMol() if changed else None


def _charge_separated(mol: Chem.Mol, rng: random.Random) -> Chem.Mol | None:
    rw = Chem.RWMol(mol)
    choices = []
    for n_idx, _ in rw.GetSubstructMatches(_ANILINE_N):
        choices.append(("nitro", n_idx))
    for s_idx, o_idx, _, _ in rw.GetSubstructMatches(_SULFOXIDE):
        choices.append(("sulfoxide", (s_idx, o_idx)))
    for (n_idx,) in rw.GetSubstructMatches(_PYRIDINE_N):
        choices.append(("n_oxide", n_idx))
    if not choices:
        return None
    kind, where = rng.choice(choices)
    if kind == "nitro":
        n = rw.GetAtomWithIdx(where)
        n.SetFormalCharge(1)
        n.SetNumExplicitHs(0)
        n.SetNoImplicit(True)
        o1 = rw.AddAtom(Chem.Atom(8))
        o2 = rw.AddAtom(Chem.Atom(8))
        rw.GetAtomWithIdx(o2).SetFormalCharge(-1)
        rw.AddBond(where, o1, Chem.BondType.DOUBLE)
        rw.AddBond(where, o2, Chem.BondType.SINGLE)
    elif kind == "sulfoxide":
        s_idx, o_idx = where
        rw.GetBondBetweenAtoms(s_idx, o_idx).SetBondType(Chem.BondType.SINGLE)
        rw.GetAtomWithIdx(s_idx).SetFormalCharge(1)
        rw.GetAtomWithIdx(o_idx).SetFormalCharge(-1)
    else:
        rw.GetAtomWithIdx(where).SetFormalCharge(1)
        o = rw.AddAtom(Chem.Atom(8))
        rw.GetAtomWithIdx(o).SetFormalCharge(-1)
        rw.AddBond(where, o, Chem.BondType.SINGLE)
    return rw.GetMol()


def _bromine_to_iodine(mol: Chem.Mol, rng: random.Random) -> Chem.Mol | None:
    rw = Chem.RWMol(mol)
    bromines = [a.GetIdx() for a in rw.GetAtoms() if a.GetSymbol() == "Br"]
    if not bromines:
        return None
    rw.GetAtomWithIdx(rng.choice(bromines)).SetAtomicNum(53)
    return rw.GetMol()


_MOL_EDITS: dict[str, tuple[float, Callable[[Chem.Mol, random.Random], Chem.Mol | None]]] = {
    "stereo": (0.35, _random_stereo),
    "ionise": (0.15, _ionise),
    "charge_separated": (0.2, _charge_separated),
    "iodine": (0.3, _bromine_to_iodine),
}


def relabel_rings(smiles: str, rng: random.Random) -> str:
    """Rename ring-closure labels consistently to randomly drawn labels from 1-9 and %10-%19.

    A bijective renaming keeps the SMILES valid and the molecule unchanged.
    """
    tokens = split_smiles(smiles)
    labels = [t for t in tokens if t.isdigit() or t.startswith("%")]
    if not labels:
        return smiles
    distinct = list(dict.fromkeys(labels))
    pool = [str(d) for d in range(1, 10)] + [f"%{d}" for d in range(10, 20)]
    mapping = dict(zip(distinct, rng.sample(pool, len(distinct)), strict=True))
    return "".join(mapping.get(t, t) if (t.isdigit() or t.startswith("%")) else t for t in tokens)


def augment(smiles: str, seed: int, p_relabel: float = 0.05) -> str:
    """Return ``smiles`` with the augmentation edits applied, each with its own probability.

    The result is deterministic in ``(smiles, seed)``. Edits that fail RDKit sanitisation are
    skipped; the returned SMILES always parses.
    """
    rng = random.Random(f"{seed}:{smiles}")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return smiles
    for prob, edit in _MOL_EDITS.values():
        if rng.random() >= prob:
            continue
        new = edit(mol, rng)
        if new is None:
            continue
        try:
            Chem.SanitizeMol(new)
        except Exception:  # noqa: BLE001 - an edit that breaks valence is simply not applied
            continue
        mol = new
    out = Chem.MolToSmiles(mol)
    if rng.random() < p_relabel:
        out = relabel_rings(out, rng)
    return out


def _augment_chunk(args: tuple[Sequence[str], int, float]) -> list[str]:
    RDLogger.DisableLog("rdApp.*")
    chunk, seed, fraction = args
    out = []
    for s in chunk:
        # the decision to augment is itself a deterministic function of (seed, smiles)
        if random.Random(f"pick:{seed}:{s}").random() < fraction:
            out.append(augment(s, seed))
        else:
            out.append(s)
    return out


def prepare_corpus(
    out_dir: Path,
    n_train: int,
    n_valid: int = 10_000,
    fraction_augmented: float = 0.5,
    seed: int = 0,
    workers: int = 2,
) -> dict:
    """Fetch MOSES, shuffle it, hold out a validation slice and write augmented text files.

    Writes ``train.txt`` (``n_train`` SMILES) and ``valid.txt`` (``n_valid``, disjoint from
    train), one SMILES per line, and returns a provenance dictionary (also written as
    ``corpus.json``).
    """
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    raw = fetch_moses(out_dir)
    digest = sha256(raw)
    if digest != MOSES_SHA256:
        log.warning("MOSES train.csv.gz sha256 is %s; recorded value is %s", digest, MOSES_SHA256)
    smiles = read_moses(raw)
    order = list(range(len(smiles)))
    random.Random(seed).shuffle(order)
    valid_idx, train_idx = order[:n_valid], order[n_valid : n_valid + n_train]
    chunks = []
    for name, idx in (("valid", valid_idx), ("train", train_idx)):
        part = [smiles[i] for i in idx]
        chunks.append((name, part))
    provenance = {
        "source": f"pip download {MOSES_WHEEL} :: {MOSES_MEMBER}",
        "sha256": digest,
        "n_moses": len(smiles),
        "seed": seed,
        "fraction_augmented": fraction_augmented,
        "edits": {name: prob for name, (prob, _) in _MOL_EDITS.items()} | {"relabel_rings": 0.05},
    }
    for name, part in chunks:
        step = 5000
        jobs = [(part[i : i + step], seed, fraction_augmented) for i in range(0, len(part), step)]
        with Pool(workers) as pool:
            augmented = [s for chunk in pool.map(_augment_chunk, jobs) for s in chunk]
        (out_dir / f"{name}.txt").write_text("\n".join(augmented) + "\n")
        provenance[f"n_{name}"] = len(augmented)
        provenance[f"n_{name}_changed"] = sum(a != b for a, b in zip(augmented, part, strict=True))
    (out_dir / "corpus.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/corpus"), help="output folder (git-ignored)")
    parser.add_argument("--n-train", type=int, default=1_000_000)
    parser.add_argument("--n-valid", type=int, default=10_000)
    parser.add_argument("--fraction-augmented", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    info = prepare_corpus(args.out, args.n_train, args.n_valid, args.fraction_augmented, args.seed, args.workers)
    log.info("corpus written to %s: %s", args.out, info)


if __name__ == "__main__":
    main()


def _inchikey(smiles: str) -> str | None:
    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    return Chem.MolToInchiKey(mol) if mol is not None else None


def inchikey_overlap(
    corpus_smiles: Sequence[str], parts: dict[str, Sequence[str]], workers: int = 1
) -> dict[str, dict[str, int | float]]:
    """How many molecules of each named part also occur in the corpus, by InChIKey (full key and first block).

    The first 14 characters of an InChIKey encode the connectivity only, so the ``skeleton`` count also matches
    stereo-isomers and charge states of a corpus molecule (the corpus augmentation adds such variants).
    """
    with Pool(workers) as pool:
        corpus_keys = {k for k in pool.imap(_inchikey, corpus_smiles, chunksize=2048) if k}
    skeletons = {k[:14] for k in corpus_keys}
    out: dict[str, dict[str, int | float]] = {}
    for name, smiles in parts.items():
        keys = [_inchikey(s) for s in smiles]
        n = len(keys)
        exact = sum(k in corpus_keys for k in keys if k)
        skeleton = sum(k[:14] in skeletons for k in keys if k)
        out[name] = {"n": n, "exact": exact, "skeleton": skeleton, "exact_fraction": exact / max(n, 1)}
    return out
