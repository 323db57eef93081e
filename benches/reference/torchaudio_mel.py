"""torchaudio reference for parity tests: same waveforms in, power mel, log-mel and resampled audio out.
Each clip goes through torchaudio on its own (a batch of one).

Usage: python torchaudio_mel.py REQUESTS.json   (one request or a list; one Python start for all)
REQUEST: {"waves": "in.f32", "count": B, "length": N, "config": {...MelConfig, camelCase...},
          "out": "prefix", "device": "cpu", "resample": {"input": "x.f32", "from": 44100, "to": 48000}}
Writes prefix.power.f32 and prefix.db.f32 ([B, n_mels, frames], all frames) and prefix.resampled.f32;
prints one JSON line per request.
"""
import json
import sys

import numpy as np
import torch
import torchaudio


def main(path):
    reqs = json.load(open(path))
    for req in reqs if isinstance(reqs, list) else [reqs]:
        run(req)


def run(req):
    device = req.get("device", "cpu")
    c = req["config"]
    waves = np.fromfile(req["waves"], dtype=np.float32).reshape(req["count"], req["length"])
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=c["sampleRate"],
        n_fft=c["nFft"],
        win_length=c.get("winLength"),
        hop_length=c["hopLength"],
        f_min=c["fMin"],
        f_max=c.get("fMax"),
        n_mels=c["nMels"],
        power=c["power"],
        center=c["center"],
        pad_mode=c["padMode"],
        norm=c.get("norm"),
        mel_scale=c["melScale"],
    ).to(device)
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=c.get("topDb"))
    x = torch.from_numpy(waves).to(device)
    with torch.no_grad():
        # One clip at a time, as emotion-pipeline's features are: MKL rounds a batched product
        # differently from a single clip's, so a batch would make each clip depend on the others.
        power = torch.cat([mel(x[i:i + 1]) for i in range(len(x))])
        # One clip at a time: torchaudio applies top_db over the whole batch of a 3-D input.
        db = torch.stack([to_db(p) for p in power])
    power.cpu().numpy().astype(np.float32).tofile(req["out"] + ".power.f32")
    db.cpu().numpy().astype(np.float32).tofile(req["out"] + ".db.f32")
    rs = req.get("resample")
    if rs:
        src = torch.from_numpy(np.fromfile(rs["input"], dtype=np.float32))
        torchaudio.functional.resample(src, rs["from"], rs["to"]).numpy().tofile(req["out"] + ".resampled.f32")
    print(json.dumps({"shape": list(power.shape), "torchaudio": torchaudio.__version__}))


if __name__ == "__main__":
    main(sys.argv[1])
