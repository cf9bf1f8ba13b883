// The parts of Apache ECharts the dashboard uses (hpo_service/dashboard/charts.js), canvas renderer.
import * as echarts from 'echarts/core';
import { LineChart, ScatterChart, BarChart, ParallelChart } from 'echarts/charts';
import {
  GridComponent, TooltipComponent, LegendComponent, LegendScrollComponent, DataZoomComponent,
  DataZoomInsideComponent, DataZoomSliderComponent, VisualMapComponent, VisualMapContinuousComponent,
  MarkLineComponent, ParallelComponent, AxisPointerComponent, TitleComponent,
} from 'echarts/components';
import { CanvasRenderer } from 'echarts/renderers';

echarts.use([LineChart, ScatterChart, BarChart, ParallelChart, GridComponent, TooltipComponent, LegendComponent,
  LegendScrollComponent, DataZoomComponent, DataZoomInsideComponent, DataZoomSliderComponent, VisualMapComponent,
  VisualMapContinuousComponent, MarkLineComponent, ParallelComponent, AxisPointerComponent, TitleComponent,
  CanvasRenderer]);
window.echarts = echarts;
