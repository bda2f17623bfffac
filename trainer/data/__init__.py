"""Data plane inputs: DICOM decoding (:mod:`.dicom`), manifests (:mod:`.manifest`), patient-level
splits and nested subsets (:mod:`.split`), and the phantom chest X-ray corpus (:mod:`.phantom`)."""
