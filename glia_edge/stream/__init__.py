"""Camera pipelines: score a live stream frame by frame, smooth the score and raise alerts.

``QualityMonitor`` scores frames from any iterator or callback on a worker thread without
blocking the producer; ``VideoSource`` reads files, cameras, RTSP/HTTP URLs and GStreamer
pipelines through OpenCV (``glia-edge[camera]``); ``states`` holds the smoothing, hysteresis and the
baseline mode (alerts relative to the stream's own learned level, the default).
"""
from glia_edge.stream.monitor import FrameResult, MonitorStats, QualityMonitor
from glia_edge.stream.sources import Frame, SourceError, SourceSpec, VideoSource, open_source, parse_source
from glia_edge.stream.states import Alert, Ema, QualityState, RelativeThresholds, State, Thresholds

__all__ = ["Alert", "Ema", "Frame", "FrameResult", "MonitorStats", "QualityMonitor", "QualityState",
           "RelativeThresholds", "SourceError", "SourceSpec", "State", "Thresholds", "VideoSource", "open_source",
           "parse_source"]
