#!/usr/bin/env bash
# On a machine with a CUDA GPU: QLoRA DPO (4-bit nf4 + LoRA), bf16 full DPO (flash-attention where
# installed), and the alignkit-vs-TRL comparison in bf16; figures go to benchmarks/results/gpu.md.
#
#   bash benchmarks/gpu.sh            # from the repository root, after the README's set-up
#
# Each run's throughput and peak GPU memory come from its own metrics.jsonl (train_runtime,
# train_tokens_per_second) and torch.cuda.max_memory_allocated (printed by the benchmark workers).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: this script is for GPU machines')"
pip install -q -e '.[gpu,bench]'
ATTN=sdpa
python -c "import flash_attn" 2>/dev/null && ATTN=flash_attention_2
OUT=benchmarks/results/gpu.md
RUNS=$(mktemp -d)
GPU=$(python -c "import torch; print(torch.cuda.get_device_name(0))")
{
  echo "# GPU figures ($GPU, $(date -u +%Y-%m-%d))"
  echo
  echo "Made by \`bash benchmarks/gpu.sh\`. Attention for the bf16 full run: $ATTN."
} > "$OUT"

summary() {  # name, run dir: the run's throughput summary as a table row
  python - "$1" "$2" >> "$OUT" <<'EOF'
import json, sys
from pathlib import Path
name, run = sys.argv[1], Path(sys.argv[2])
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
last = [r for r in rows if "train_runtime" in r][-1]
print(f"| {name} | {last['train_runtime']:.1f} | {last['train_samples_per_second']:.2f} | {last['train_tokens_per_second']:.0f} |")
EOF
}

echo -e "\n## Runs (50 steps of examples/dpo*.yaml)\n\n| run | train_runtime (s) | pairs/s | tokens/s |\n|---|---|---|---|" >> "$OUT"
alignkit dpo examples/dpo_lora.yaml --load_in_4bit true --dtype bfloat16 --output_dir "$RUNS/qlora" --overwrite --max_steps 50 --disable_tqdm
summary "QLoRA (nf4, double quant), LoRA r=16" "$RUNS/qlora"
alignkit dpo examples/dpo.yaml --mixed_precision bf16 --attn_implementation "$ATTN" --output_dir "$RUNS/bf16-full" --overwrite --max_steps 50 --disable_tqdm
summary "bf16 full DPO ($ATTN)" "$RUNS/bf16-full"

echo -e "\n## alignkit vs TRL, bf16\n" >> "$OUT"
python benchmarks/dpo_vs_trl.py --bf16 --skip-parity --pairs 64 | tee -a "$OUT"
echo -e "\n## alignkit vs TRL, fp32 (with first-step parity)\n" >> "$OUT"
python benchmarks/dpo_vs_trl.py --pairs 64 | tee -a "$OUT"
echo "wrote $OUT"
