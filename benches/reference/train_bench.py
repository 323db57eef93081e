"""The reference audio CNN and training step in Python PyTorch, for a side-by-side speed figure.

Usage: python train_bench.py DEVICE STEPS BATCH ACCUM AMP(fp16|bf16|off) [FORMAT(contiguous|channels-last)]
→ one JSON line. AMP on the CPU: bf16 autocast (fp16 is CUDA's); FORMAT: the model and its inputs
in torch.channels_last, as PyTorch's performance guide recommends for CNNs.
Same architecture and loop as emotion-pipeline's defaults: 6 conv blocks (32..512), BN, max-pool,
global average pool, FC 512→256→128→8, dropout 0.5, Adam 1e-3, cross-entropy, accumulation.
"""
import json
import sys
import time

import torch
import torch.nn as nn


class AudioCnn(nn.Module):
    def __init__(self, classes=8, channels_last=False):
        super().__init__()
        self.channels_last = channels_last
        layers, c_in = [], 1
        for c in [32, 64, 128, 256, 512, 512]:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 128), nn.ReLU(),
                                  nn.Dropout(0.5), nn.Linear(128, classes))

    def forward(self, x):
        x = x.unsqueeze(1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.features(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def main(device, steps, batch, accum, amp, layout="contiguous", cudnn_benchmark="1"):
    torch.manual_seed(0)
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = cudnn_benchmark == "1"
    channels_last = layout == "channels-last"
    model = AudioCnn(channels_last=channels_last).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    use_amp = amp == "bf16" or (amp == "fp16" and cuda)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp == "fp16" and cuda)
    data = torch.randn(512, 128, 280, device=device)
    labels = torch.randint(0, 8, (512,), device=device)

    def run(n):
        for step in range(n):
            idx = torch.randint(0, 512, (batch,), device=device)
            with torch.autocast("cuda" if cuda else "cpu", dtype=dtype, enabled=use_amp):
                loss = nn.functional.cross_entropy(model(data[idx]).float(), labels[idx]) / accum
            scaler.scale(loss).backward()
            if (step + 1) % accum == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    run(max(4, accum * 2))  # warm-up: cuDNN autotuning, allocator
    t0 = time.perf_counter()
    run(steps)
    seconds = time.perf_counter() - t0
    print(json.dumps({"microStepsPerSecond": steps / seconds, "seconds": seconds, "amp": amp if use_amp else False,
                      "format": layout,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], *sys.argv[6:8])
