"""The browser-test set-up itself: a Gradio page on loopback, clicked in headless Chromium."""
import gradio as gr
from browser_helpers import served


def test_a_button_clicked_in_chromium_runs_its_handler_on_the_server(browser):
    clicks = []

    def on_click(text):
        clicks.append(text)
        return f'got {text}'

    with gr.Blocks() as demo:
        box = gr.Textbox(label='in')
        out = gr.Textbox(label='out')
        gr.Button('Go').click(on_click, box, out)
    with served(demo) as url:
        page = browser.new_page()
        page.goto(url)
        page.get_by_label('in').fill('hello')
        page.get_by_role('button', name='Go', exact=True).click()
        page.wait_for_function("() => [...document.querySelectorAll('textarea')].some(t => t.value === 'got hello')")
        assert clicks == ['hello']
        page.close()
