"""Evaluation metrics (generative and restoration).

* `metric_main`: the registry (`register_metric`, `list_valid_metrics`, `is_valid_metric`,
  `calc_metric`, `report_metric`) with the stylegan2-ada-pytorch metrics (fid50k_full,
  kid50k_full, pr50k3_full, ppl2_wend, is50k, the legacy variants and cheaper ones).
* `metric_utils`: `MetricOptions`, detector loading (`get_feature_detector`), `FeatureStats`,
  dataset/generator feature extraction with the statistics cache, `ProgressMonitor`.
* `frechet_inception_distance`, `kernel_inception_distance`, `precision_recall`,
  `perceptual_path_length`, `inception_score`: the metric math (each also usable on raw features).
* `restoration`: PSNR, SSIM, LPIPS, NIQE and patch FID for restoration benchmarks and inversion.
"""
