"""The reference front end in Python: soundfile decode + torchaudio resample + MelSpectrogram/AmplitudeToDB,
batched on the same device with the same parameters as emotion-pipeline's defaults.

Usage: python mel_bench.py FILELIST.txt WAVES.f32 DEVICE BATCH REPEATS   → one JSON line
WAVES.f32 holds the clips already decoded and fitted to 3 s (by emotion-pipeline) for the mel-only timing.
Without soundfile (as on a GPU host) the decode timing is left out.
"""
import json
import sys
import time

import numpy as np
import torch
import torchaudio

SR, N = 48000, 144000


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(listing, waves_path, device, batch, repeats):
    files = [l.strip() for l in open(listing) if l.strip()]
    try:
        import soundfile
    except ImportError:
        soundfile = None
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=2048, hop_length=512, n_mels=128, power=2.0, center=True, pad_mode="reflect",
        mel_scale="htk").to(device)
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80)

    def features(waves):
        with torch.no_grad():
            out = []
            for i in range(0, len(waves), batch):
                x = torch.from_numpy(np.stack(waves[i:i + batch])).to(device)
                p = mel(x)
                # per clip top_db, as emotion-pipeline does
                db = torch.stack([to_db(c) for c in p])
                out.append(db[..., :280].cpu())
            sync(device)
            return out

    def load(path):
        x, rate = soundfile.read(path, dtype="float32", always_2d=True)
        x = torch.from_numpy(x.mean(axis=1))
        if rate != SR:
            x = torchaudio.functional.resample(x, rate, SR)
        x = x[:N]
        return np.pad(x.numpy(), (0, N - len(x)))

    decoded = list(np.fromfile(waves_path, dtype=np.float32).reshape(-1, N))
    features(decoded[:batch])  # warm-up (kernels, allocator)
    best_full, best_mel = float("inf"), float("inf")
    for _ in range(repeats):
        if soundfile is not None:
            t0 = time.perf_counter()
            features([load(f) for f in files])
            best_full = min(best_full, time.perf_counter() - t0)
        t0 = time.perf_counter()
        features(decoded)
        best_mel = min(best_mel, time.perf_counter() - t0)
    print(json.dumps({"decodeMelSeconds": best_full if soundfile else None, "melSeconds": best_mel,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
