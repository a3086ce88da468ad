"""The data layer: image decoding, label files, every data set's on-disk layouts, subsets and label noise, the
decoded-image cache, the Dataset, transforms, ``check-data``, and the two tools that make data: SynthFER
(`data.synthfer`) and face alignment (`data.align`). Imports only `utils`.
"""
