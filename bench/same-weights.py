#!/usr/bin/env python3
"""Whether two checkpoints hold the same tensors, bit for bit (the header, with the git
revision, may differ). Usage: bench/same-weights.py A.safetensors B.safetensors
Needs numpy and safetensors (bench/cpu.sh installs both into ~/.cache/byol/bench-venv)."""
import sys
from safetensors.numpy import load_file

a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
only = sorted(set(a) ^ set(b))
differ = sorted(k for k in set(a) & set(b) if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes())
print(f"{len(a)} and {len(b)} tensors; {len(only)} in one file only, {len(differ)} differ")
for k in (only + differ)[:20]:
    print("  ", k)
sys.exit(1 if only or differ else 0)
