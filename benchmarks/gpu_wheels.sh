#!/usr/bin/env bash
# Run HERE (a machine with PyPI), from the repository root, before a GPU check on a lent machine that
# has no package registry: it fills .whl/ (git-ignored) with the wheels alignkit, TRL and QLoRA need
# there, for that machine's Python 3.12 (torch, transformers, peft, accelerate, numpy, pyarrow, pandas,
# rich, tqdm, tensorboard and matplotlib are already there), and .gpu/tokenizer with SmolLM2's
# tokenizer (the GGUF itself is too big to travel). alignkit runs there from the checkout's src/ (PYTHONPATH).
# Then see benchmarks/README.md ("GPU check").
#
#   bash benchmarks/gpu_wheels.sh            # about 50 MB of wheels; --no-bnb leaves bitsandbytes out
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0 trl==1.16.0
)
[[ "${1:-}" == "--no-bnb" ]] || WHEELS+=(bitsandbytes==0.50.0)
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d .whl "${WHEELS[@]}"
mkdir -p .gpu/tokenizer
python3 - <<'EOF'
from alignkit.models.loading import load_tokenizer
load_tokenizer("embedded").save_pretrained(".gpu/tokenizer")
EOF
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
du -sh .whl .gpu
